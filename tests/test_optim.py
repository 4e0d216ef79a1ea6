"""Learning-rate schedules (functions of the step) and optimizer construction."""

import keras
import numpy as np
import pytest

from sectrain.config import OptimizerConfig, ScheduleConfig
from sectrain.training.optim import EpochSchedule, make_optimizer, make_schedule

STEPS_PER_EPOCH = 10


def lr_at(schedule, epoch):
    return float(schedule(epoch * STEPS_PER_EPOCH))


def test_linear_warmup_rises_from_zero_to_peak():
    schedule = make_schedule(
        ScheduleConfig(name="constant", warmup_epochs=2), 0.4, STEPS_PER_EPOCH, 10
    )
    assert [lr_at(schedule, e) for e in (0, 0.5, 1, 2, 9)] == pytest.approx([0, 0.1, 0.2, 0.4, 0.4])


def test_multistep_multiplies_by_gamma_at_each_milestone():
    config = ScheduleConfig(name="multistep", milestones=[3, 6], gamma=0.1)
    schedule = make_schedule(config, 1.0, STEPS_PER_EPOCH, 10)
    assert [lr_at(schedule, e) for e in (0, 2.9, 3, 5.9, 6, 9)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.01]
    )


def test_step_decays_every_step_size_epochs():
    schedule = make_schedule(
        ScheduleConfig(name="step", step_size=30, gamma=0.1), 0.6, STEPS_PER_EPOCH, 100
    )
    assert [lr_at(schedule, e) for e in (29, 30, 60, 99)] == pytest.approx(
        [0.6, 0.06, 0.006, 0.0006]
    )


def test_cosine_goes_from_peak_to_min_after_warmup():
    config = ScheduleConfig(name="cosine", warmup_epochs=1, min_lr_ratio=0.1)
    schedule = make_schedule(config, 1.0, STEPS_PER_EPOCH, 11)
    assert lr_at(schedule, 1) == pytest.approx(1.0)
    assert lr_at(schedule, 6) == pytest.approx(0.55)  # half way: (1 + 0.1) / 2
    assert lr_at(schedule, 11) == pytest.approx(0.1)


def test_schedule_serialises_to_its_arguments():
    schedule = EpochSchedule("step", 0.1, 100, warmup_steps=5, boundaries=[50], gamma=0.5)
    clone = EpochSchedule.from_config(schedule.get_config())
    assert [float(clone(s)) for s in (0, 3, 60)] == [float(schedule(s)) for s in (0, 3, 60)]


@pytest.mark.parametrize(
    "config, kind",
    [
        (OptimizerConfig(name="sgd", nesterov=True), keras.optimizers.SGD),
        (OptimizerConfig(name="adam"), keras.optimizers.Adam),
        (OptimizerConfig(name="adamw", weight_decay=0.05), keras.optimizers.AdamW),
    ],
)
def test_optimizers_are_built_from_config(config, kind):
    optimizer = make_optimizer(config, 0.01, "float32")
    assert type(optimizer) is kind
    assert np.isclose(float(optimizer.learning_rate), 0.01)


def test_mixed_float16_wraps_the_optimizer_in_loss_scaling():
    optimizer = make_optimizer(OptimizerConfig(name="sgd"), 0.01, "mixed_float16")
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
