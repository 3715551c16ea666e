"""Image data: Fashion-MNIST from Debian's IDX files, other sets from the TFDS catalogue.

Everything goes through tensorflow-datasets *without TensorFlow*: features are
``tfds.features.Tensor``/``ClassLabel`` (``tfds.features.Image`` would import TF), files
are ``array_record`` and reading uses ``as_data_source()``, a random-access sequence of
numpy examples. Nothing is ever downloaded: Fashion-MNIST is prepared once from the IDX
files of Debian's ``dataset-fashion-mnist`` package into a cache directory; other data
sets must already be prepared (``tfds build NAME --file_format=array_record``) by the user.
Without tensorflow-datasets installed, Fashion-MNIST and MNIST load straight from their IDX
files into memory (same arrays), and catalogue names raise ``ImportError`` saying so.

For training, :func:`load_arrays` puts a whole split in memory as float32 in [0, 1]
(zero-padded to 32 × 32 as in the MDSM paper) and :class:`BatchIterator` serves shuffled
batches whose order is a pure function of ``(seed, epoch, index)``, so training can resume
the data order exactly::

    x, y = load_arrays("fashion_mnist", "train")
    batches = BatchIterator(x, batch_size=128, seed=0, prefetch=2)
    state, history = dj.fit(step, state, n_steps, batches=batches)  # checkpoints .position

One job a module: :mod:`~dsm_jax.data.idx` (IDX files), :mod:`~dsm_jax.data.tfds_builder`
(the local TFDS builder), :mod:`~dsm_jax.data.loading` (a split as a source or as arrays),
:mod:`~dsm_jax.data.images` (model input and its check), :mod:`~dsm_jax.data.batches` and
:mod:`~dsm_jax.data.prefetch` (the batch iterator). ``import dsm_jax.data`` does not import
``tensorflow_datasets``; loading a data set (or touching :class:`FashionMnistIdx`) does.
"""
from dsm_jax.data.batches import BatchIterator
from dsm_jax.data.idx import DEFAULT_IDX_DIR, FASHION_MNIST_CLASSES, find_idx_files, read_idx, read_idx_split
from dsm_jax.data.images import check_images, padded_shape, to_model_input
from dsm_jax.data.loading import KNOWN_IMAGE_SHAPES, ArraySource, image_shape, load_arrays, load_split

__all__ = [
    "ArraySource",
    "BatchIterator",
    "DEFAULT_IDX_DIR",
    "FASHION_MNIST_CLASSES",
    "FashionMnistIdx",
    "KNOWN_IMAGE_SHAPES",
    "check_images",
    "find_idx_files",
    "image_shape",
    "load_arrays",
    "load_split",
    "padded_shape",
    "read_idx",
    "read_idx_split",
    "to_model_input",
]


def __getattr__(name):
    # The builder subclasses a tfds class, so it is imported (with tfds) on first use only.
    if name == "FashionMnistIdx":
        from dsm_jax.data.tfds_builder import FashionMnistIdx

        return FashionMnistIdx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
