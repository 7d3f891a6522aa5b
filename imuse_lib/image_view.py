"""The image-view spec: how a picture becomes a backbone's input, written once.

The paper's views (torchvision's): the *evaluation view* resizes the shorter side to
:data:`RESIZE` (PIL's antialiased bilinear filter) and takes the centre :data:`CROP` square;
a *training view* takes a random crop of that size and flips it horizontally with
probability 0.5. Both end as a float tensor in [0, 1] (``ToTensor``), then each backbone
family normalises it its own way (:data:`NORMALISATION`: ImageNet mean/std for the
torchvision models, (x*255 - 127) / 128 for the TensorFlow-trained EfficientNet-Lite,
none for the hand-made image statistics).

Everything that resizes, crops or normalises an image reads these names: the backbones
(:mod:`imuse_lib.models`), the decoder's memory bound (:mod:`imuse_lib.media`), the torch
image path (:mod:`imuse_lib.image_path`) and the book's page, whose ``songs.json``
(:func:`imuse_lib.export.song_table`) carries :func:`page_spec` for ``preprocess.js`` to
read: the page retypes no number. Nothing here imports torch; the transforms are built on
demand.
"""

from __future__ import annotations

RESIZE = 256  # shorter side, before cropping
CROP = 224  # square crop fed to the backbones
HFLIP_P = 0.5  # training views: horizontal flip probability

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF EfficientNet-Lite: (x*255 - 127) / 128
LITE_MEAN = (127.0 / 255, 127.0 / 255, 127.0 / 255)
LITE_STD = (128.0 / 255, 128.0 / 255, 128.0 / 255)
UNIT_MEAN, UNIT_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # no normalisation: RGB in [0, 1]

NORMALISATION = {"imagenet": (IMAGENET_MEAN, IMAGENET_STD), "lite": (LITE_MEAN, LITE_STD),
                 "none": (UNIT_MEAN, UNIT_STD)}

# The views in words (recorded in the feature store's specification: part of its keys).
TRAIN_VIEW = f"Resize({RESIZE}, bilinear) + RandomCrop({CROP}) + RandomHorizontalFlip({HFLIP_P})"
EVAL_VIEW = f"Resize({RESIZE}, bilinear) + CenterCrop({CROP})"


def crop_steps() -> list:
    """torchvision's evaluation view up to the float tensor in [0, 1], as a list of steps
    (what the book's page reproduces before the exported module)."""
    from torchvision import transforms as T

    return [T.Resize(RESIZE), T.CenterCrop(CROP), T.ToTensor()]


def crop_transform():
    """PIL RGB -> float [3, CROP, CROP] in [0, 1]: the evaluation view without normalisation."""
    from torchvision import transforms as T

    return T.Compose(crop_steps())


def make_transforms(mean, std):
    """(train_transform, eval_transform): PIL RGB -> normalised float tensor [3, CROP, CROP]."""
    from torchvision import transforms as T

    tail = [T.ToTensor(), T.Normalize(mean, std)]
    train = T.Compose([T.Resize(RESIZE), T.RandomCrop(CROP), T.RandomHorizontalFlip(HFLIP_P), *tail])
    evaluation = T.Compose([T.Resize(RESIZE), T.CenterCrop(CROP), *tail])
    return train, evaluation


def page_spec() -> dict:
    """What the book's page needs to reproduce the evaluation view (``songs.json``)."""
    return {"resize": RESIZE, "crop": CROP}
