"""The training and evaluation steps, over any tf.distribute strategy.

sectrain owns this loop instead of calling `model.fit`, which fails under
MultiWorkerMirroredStrategy in Keras 3. Each replica computes its loss as a sum over its
examples divided by the global batch size, so the gradients summed across replicas (and
across the micro-batches of a replica) are those of the mean loss over the global batch.
"""

from contextlib import contextmanager

import keras
import tensorflow as tf

from sectrain.training.optim import l2_penalty


def compiles_whole_step(strategy):
    """Whether XLA may compile a replica's whole training step under `strategy`.

    Not under MirroredStrategy and MultiWorkerMirroredStrategy: there the optimizer's
    update synchronises the replicas with a `merge_call`, which TensorFlow refuses inside
    an XLA-compiled function, so XLA compiles the forward and backward pass only.
    """
    return not isinstance(
        strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy)
    )


class TrainingLoop:
    """Compiled steps and running metrics for one model on one strategy.

    Args:
        strategy: the tf.distribute strategy whose scope holds the model and optimizer.
        model: a Keras model that outputs logits.
        optimizer: a built Keras optimizer.
        global_batch_size: int, examples per step over all replicas.
        l2_rate: float, coefficient of the L2 weight penalty (0: none).
        jit_compile: bool, compile each replica's step with XLA; under a mirrored
            strategy, its forward and backward pass only (see `compiles_whole_step`).
        label_smoothing: float, training targets 1 - eps + eps / classes on the label and
            eps / classes elsewhere; evaluation uses the plain labels.
        micro_batches: int, forward and backward passes per replica and step, each on
            an equal part of the replica's batch, with one update from their summed
            gradients: a large global batch in the memory of a small one. Batch norm
            normalises each micro-batch by its own statistics. Evaluation runs in the
            same parts (with the same results: batch norm uses its moving statistics).
        ema_decay: float, keep an exponential moving average of the trainable weights,
            with decay min(ema_decay, (1 + step) / (10 + step)), and evaluate it instead
            of the weights (0: none).
    """

    def __init__(
        self,
        strategy,
        model,
        optimizer,
        global_batch_size,
        l2_rate,
        jit_compile,
        label_smoothing=0.0,
        micro_batches=1,
        ema_decay=0.0,
    ):
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.global_batch_size = global_batch_size
        self.l2_rate = l2_rate
        self.label_smoothing = label_smoothing
        self.micro_batches = micro_batches
        self.ema_decay = ema_decay
        self.num_classes = model.output.shape[-1]
        top_k = min(5, self.num_classes)
        with strategy.scope():
            self.metrics = {
                split: {
                    "loss": keras.metrics.Mean(name=f"{split}_loss"),
                    "top1": keras.metrics.SparseCategoricalAccuracy(name=f"{split}_top1"),
                    "top5": keras.metrics.SparseTopKCategoricalAccuracy(
                        k=top_k, name=f"{split}_top5"
                    ),
                }
                for split in ("train", "val")
            }
            # the moving average of each trainable weight, starting from its initial value
            self.averages = [
                tf.Variable(v.value, trainable=False, name=f"average_{i}")
                for i, v in enumerate(model.trainable_variables)
                if ema_decay
            ]
        whole_step = compiles_whole_step(strategy)
        # what XLA compiles of a step: "none", "step", or "forward and backward" (and the
        # forward pass of evaluation), with the update and the metrics outside
        self.xla = "none" if not jit_compile else "step" if whole_step else "forward and backward"
        compile_passes = self.xla == "forward and backward"
        self._gradients, self._logits = (
            tf.function(f, jit_compile=True) if compile_passes else f
            for f in (self._replica_gradients, self._replica_logits)
        )
        self._train_replica = tf.function(self._train_replica_step, jit_compile=self.xla == "step")
        self._eval_replica = tf.function(self._eval_replica_step, jit_compile=self.xla == "step")

    def _update(self, split, labels, logits, per_example_loss, weights=None):
        metrics = self.metrics[split]
        metrics["loss"].update_state(per_example_loss, weights)
        metrics["top1"].update_state(labels, logits, weights)
        metrics["top5"].update_state(labels, logits, weights)

    def _replica_gradients(self, images, labels):
        """The forward and backward pass: gradients, logits and per-example losses."""
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            if self.label_smoothing:
                per_example = keras.losses.categorical_crossentropy(
                    tf.one_hot(labels, self.num_classes),
                    logits,
                    from_logits=True,
                    label_smoothing=self.label_smoothing,
                )
            else:
                per_example = keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True
                )
            loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
            if self.l2_rate:  # once per step: a share in each replica's each micro-batch
                penalty = l2_penalty(self.model, self.l2_rate) / self.micro_batches
                loss += tf.nn.scale_regularization_loss(penalty)
            scaled_loss = self.optimizer.scale_loss(loss)
        return tape.gradient(scaled_loss, self.model.trainable_variables), logits, per_example

    def _train_replica_step(self, images, labels):
        if self.micro_batches == 1:  # one pass needs no graph loop around it
            gradients, logits, per_example = self._gradients(images, labels)
            self._update("train", labels, logits, per_example)
        else:
            images, labels = self._micro_batches(images, labels)
            gradients = [tf.zeros_like(v) for v in self.model.trainable_variables]
            for i in tf.range(self.micro_batches):  # a graph loop: the graph stays small
                micro_gradients, logits, per_example = self._gradients(images[i], labels[i])
                self._update("train", labels[i], logits, per_example)
                gradients = [g + m for g, m in zip(gradients, micro_gradients)]
        self.optimizer.apply(gradients, self.model.trainable_variables)

    def _micro_batches(self, *tensors):
        """Each tensor cut along the batch into `micro_batches` equal parts, stacked: part
        i is [i]."""
        return [tf.reshape(x, [self.micro_batches, -1, *x.shape[1:]]) for x in tensors]

    def _replica_logits(self, images):
        return self.model(images, training=False)

    def _eval_replica_step(self, images, labels, weights):
        if self.micro_batches == 1:
            self._eval_pass(images, labels, weights)
        else:
            # a batch that training can only take in parts need not fit one forward pass
            # either (on a GPU, a padded convolution input of WRN-16-8 at batch 32,768
            # overflows the 32-bit element count of TensorFlow's kernels)
            images, labels, weights = self._micro_batches(images, labels, weights)
            for i in tf.range(self.micro_batches):
                self._eval_pass(images[i], labels[i], weights[i])

    def _eval_pass(self, images, labels, weights):
        logits = self._logits(images)
        per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        self._update("val", labels, logits, per_example, weights)

    @tf.function
    def train_steps(self, iterator, num_steps):
        """Runs `num_steps` training steps (a tensor: no retracing) in one call."""
        for _ in tf.range(num_steps):
            self.strategy.run(self._train_replica, args=next(iterator))
            if self.averages:
                self._update_averages()

    def _update_averages(self):
        step = tf.cast(self.optimizer.iterations, "float32")  # counts the step just taken
        decay = tf.minimum(self.ema_decay, (1.0 + step) / (10.0 + step))
        for average, variable in zip(self.averages, self.model.trainable_variables):
            # on each replica's own copy, as the optimizer updates the weights
            self.strategy.extended.update(
                average,
                lambda a, v: a.assign(decay * a + (1.0 - decay) * v),
                args=(variable.value,),
            )

    @contextmanager
    def averaged_weights(self):
        """Inside this block the model holds the moving averages of its trainable weights
        (if the loop keeps them), and its own weights again after it."""
        self._swap_averages()
        try:
            yield
        finally:
            self._swap_averages()

    def _swap_averages(self):
        for average, variable in zip(self.averages, self.model.trainable_variables):
            weights = variable.numpy()
            variable.assign(average.numpy())
            average.assign(weights)

    @tf.function
    def _evaluate(self, iterator, num_steps):
        for _ in tf.range(num_steps):
            self.strategy.run(self._eval_replica, args=next(iterator))

    def evaluate(self, iterator, steps):
        """Evaluates `steps` batches of (images, labels, weights) from `iterator`, one of
        a distributed data set (see `sectrain.data.pipeline.make_pipelines`), with the
        averaged weights if the loop keeps them; returns {"loss", "top1", "top5"}, means
        weighted by `weights`."""
        self.reset("val")
        with self.averaged_weights():
            self._evaluate(iterator, tf.constant(steps))
        return self.results("val")

    def reset(self, split):
        for metric in self.metrics[split].values():
            metric.reset_state()

    def metric_variables(self, split):
        """The running metrics' state, for checkpoints taken mid-epoch."""
        return [v.value for metric in self.metrics[split].values() for v in metric.variables]

    def results(self, split):
        return {name: float(m.result()) for name, m in self.metrics[split].items()}
