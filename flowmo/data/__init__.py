"""The data floor: files of pixels and tokens, below the library (no models): the library, the
folders, training and the CLI import from here; nothing here imports them.

* :mod:`flowmo.data.images` - the one image decoder (every Pillow mode by documented rules),
  resizing and centre cropping, image -> float32 (3, H, W) tensor in [-1, 1]; the rules by mode
  are in :mod:`flowmo.data.image_modes`, the pixel limit, resizing and cropping in
  :mod:`flowmo.data.image_sizes` (both importable from :mod:`flowmo.data.images`).
* :mod:`flowmo.data.folders` - image folders as datasets; with :mod:`flowmo.data.photos`, the
  built-in photos and the held-out crops (:func:`~flowmo.data.photos.held_out_photos`), and
  :mod:`flowmo.data.draws`, the per-item seeded draws both datasets use.
* :mod:`flowmo.data.shards` (+ :mod:`flowmo.data.shard_writer`) - training images in tar shards
  (the webdataset layout), indexed once and read by random access in the folder's order; the
  folder -> shards tool (``flowmo shards``). Needs the ``shards`` extra for brace
  patterns and writing.
* :mod:`flowmo.data.grids` - rows of images written as one PNG.
* :mod:`flowmo.data.tokens` - token files (safetensors with ``flowmo-tokens`` metadata).
* :mod:`flowmo.data.files` - the one atomic, fsync'ed file write.
* :mod:`flowmo.data.listing` - the one folder listing (the same files in the same order for
  reconstruct, tokenize, eval, the trainer and token sets).
* :mod:`flowmo.data.token_layout`, :mod:`flowmo.data.token_shards` (+ :mod:`flowmo.data.token_set_reader`) - token
  layouts for a generator and labelled, sharded token sets.
* :mod:`flowmo.data.folder_kinds` - which kind a path is (model folder, run, checkpoint, token set, ...), so
  that every reader given the wrong kind says what it found.
* :mod:`flowmo.data.eval_images` - the images ``flowmo eval`` reads (a folder, shards, the built-in photos).

This package's ``__init__`` imports no submodule (``import flowmo`` itself loads the few it
needs, e.g. :mod:`flowmo.data.files`), so a module that needs one helper does not pay for
Pillow or the photo loaders.
"""
