"""Training the IMUSE network (paper section 4.4) from the feature store, with resume.

* **Cached mode** (what we use): the frozen backbones ran once into the feature store
  (``imuse_lib.features``); each epoch every training pair draws one of its image's stored
  training views and one of its song's stored training crops at random (the paper's
  augmentation), and validation uses the evaluation view / eval-crop mean.
* **End-to-end mode** (:func:`time_end_to_end`): the frozen backbones run on every batch,
  decoding each image and clip from disk, as the paper did. It exists to measure what the
  feature store saves (Table 1); on a CPU it is timed over a few batches and extrapolated.

Loss: Huber (delta 1) on the four outputs (image V, A and music V, A against the image's
and the song's true VA), i.e. the mean of an image-VA and a music-VA component, both
recorded per batch. Adam lr 0.01, weight decay 1e-4, batch 32, shuffled, 50 epochs:
the paper's settings. ``weighting="item"`` weighs each pair's image term by 1 / (its
image's number of training pairs) and its music term likewise by its song's, so every item
counts once (the pair sampling puts a few "worst" songs in hundreds of pairs).

The loss is reported every epoch on the validation pairs (``split == "val"``), never on the
test split; ``select="best_val"`` keeps the weights of the epoch with the lowest validation
loss (early stopping without stopping: the curve is still recorded to the end).

Seeds: ``torch.manual_seed(seed)`` (initialisation, dropout) and a
``numpy`` generator (shuffling, view/crop draws); both states go into every checkpoint,
so a resumed run continues exactly as an uninterrupted one would.

The package, by concept (each module's public names are re-exported here): :mod:`.settings`
(TrainConfig, device, file formats, the default network's path), :mod:`.feature_data`,
:mod:`.loop` (the loss, the loop, resume), :mod:`.checkpoints` (save and load),
:mod:`.predict` (a trained network as a predictor) and :mod:`.end_to_end` (Table 1's timing).
"""

from __future__ import annotations

from .checkpoints import load_checkpoint, save_model  # noqa: F401
from .end_to_end import time_end_to_end  # noqa: F401
from .feature_data import FeatureData  # noqa: F401
from .loop import (TrainResult, huber_components, item_weights, make_optimiser, new_history,  # noqa: F401
                   subnormals_flushed, train, validation_loss)
from .predict import (SATURATED_PRE_ACTIVATION, NetworkPredictor, collapse_diagnosis, predict_matrix,  # noqa: F401
                      predict_pairs)
from .settings import (CHECKPOINT_FORMAT, MODEL_FORMAT, VAL_CHUNK, TrainConfig, default_model_path,  # noqa: F401
                       device_name, resolve_device)
