"""Every folder and file flowmo writes or reads, besides images and token data: model folders and
their cards (:mod:`~flowmo.folders.model_folder`, :mod:`~flowmo.folders.card`), generator folders
(:mod:`~flowmo.folders.generator_folder`), run checkpoints (:mod:`~flowmo.folders.checkpoints`),
which kind a folder is (:mod:`~flowmo.data.folder_kinds`), the released ``.pth`` checkpoints and their
test-vector recipe (:mod:`~flowmo.folders.release`, :mod:`~flowmo.folders.reference`), the Hugging
Face Hub (:mod:`~flowmo.folders.hub`) and the ``--import`` modules a folder records
(:mod:`~flowmo.folders.imports`).

This package's ``__init__`` imports no submodule: import the one you need.
"""
