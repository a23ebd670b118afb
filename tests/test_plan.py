"""The run plan: every setting derived from config + data, decided once."""

import pytest

from byol import ConfigError
from byol.augment import PRESETS
from byol.config import resolve
from byol.plan import RunPlan, make_plan


def plan_of(values, *, hw=(28, 28), channels=1, num_items=1000, world_size=1):
    return make_plan(resolve(values), image_hw=hw, channels=channels, mean=(0.3,), std=(0.0,),
                     num_items=num_items, world_size=world_size)  # fmt: skip


def test_sizes_stem_and_augmentation_follow_the_data():
    plan = plan_of({"data": "fashion-mnist"})
    assert (plan.view_size, plan.image_size, plan.small_images) == (28, 28, True)
    assert plan.augment == "fashion-mnist"
    assert plan.std == (1 / 255,)  # a constant channel keeps a finite normalisation
    folder = plan_of({"data": "photos", "image_size": 96}, hw=(128, 128), channels=3)
    assert (folder.view_size, folder.image_size, folder.small_images) == (96, 96, False)
    assert folder.augment == "imagenet"
    assert plan_of({"data": "x.npy"}, hw=(32, 32)).augment == "cifar"
    small_views = plan_of({"image_size": 16, "eval_image_size": 28})
    assert (small_views.view_size, small_views.image_size) == (16, 28)


def test_schedule_lengths():
    plan = plan_of({"batch_size": 100, "epochs": 2.5, "warmup_epochs": 0.5, "base_lr": 0.4},
                   num_items=1050, world_size=4)  # fmt: skip
    # 1050 images cut to 1048 (a multiple of 4 ranks): 10 full batches of 100 per epoch.
    assert (plan.steps_per_epoch, plan.total_steps, plan.warmup_steps) == (10, 25, 5)
    assert plan.peak_lr == pytest.approx(0.4 * 100 / 256)
    with pytest.raises(ConfigError, match="batch_size"):
        plan_of({"batch_size": 2000}, num_items=1000)


def test_views_apply_crop_min_scale_and_overrides_and_round_trip():
    assert plan_of({"augment": "imagenet"}).views() == PRESETS["imagenet"]
    plan = plan_of({"augment": "imagenet", "crop_min_scale": 0.3,
                    "augment_view2": {"solarize_prob": 0.0, "blur_sigma": [0.5, 1.0]}})  # fmt: skip
    view1, view2 = plan.views()
    assert view1.crop_scale == view2.crop_scale == (0.3, 1.0)
    assert view2.solarize_prob == 0.0 and view2.blur_sigma == (0.5, 1.0)
    assert view1.solarize_prob == PRESETS["imagenet"][0].solarize_prob
    again = RunPlan.from_dict(plan.to_dict())
    assert again.views() == plan.views()
