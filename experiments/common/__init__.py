"""What every experiment's ``main`` shares, one module per job:

* :mod:`~experiments.common.rundir`: the run directory, its ``config.json`` and ``run.json``
  (the commit and command that ran it), JSON records;
* :mod:`~experiments.common.timing`: a monitor that fit calls every N steps or seconds (its
  time kept apart from the training time) and the one timing harness;
* :mod:`~experiments.common.tables`: markdown tables, a study's summary files, result checks;
* :mod:`~experiments.common.images`: image data (Fashion-MNIST or any prepared TFDS image
  set) and classifier scoring.

Library logic stays in ``dsm_jax``; this is host-side scaffolding. Scripts use the names
below as ``common.<name>``."""
from experiments.common.images import (MONITOR_FIELDS, OFF, PAD_TO, REFUSED, ImageData, Images, check_image_data,
                                       classifier_root, image_shape, images, load_fashion, load_images, sample_scorer)
from experiments.common.rundir import (RUN_FILE, code_version, experiment_of, process_command, read_json, record_run,
                                       restore_latest, run_entry, start, write_json)
from experiments.common.tables import markdown_table, n_params, refuse_nonfinite, write_summary
from experiments.common.timing import EverySeconds, Monitor, time_calls

__all__ = ["MONITOR_FIELDS", "OFF", "PAD_TO", "REFUSED", "ImageData", "Images", "check_image_data", "classifier_root",
           "image_shape", "images", "load_fashion", "load_images", "sample_scorer", "RUN_FILE", "code_version",
           "experiment_of", "process_command", "read_json", "record_run", "restore_latest", "run_entry", "start", "write_json",
           "markdown_table", "n_params", "refuse_nonfinite", "write_summary", "EverySeconds", "Monitor", "time_calls"]
