"""Data in and out: files, built-in data sets, checkpoints, and the atomic write under them all.

==================  ===========================================================================
module              what it holds
==================  ===========================================================================
``atomic``          :func:`~abp_np.io.atomic.atomic_write`: every file abp_np writes lands whole
``data``            images, sounds and videos read into and written from ``[-1, 1]`` arrays
``datasets``        built-in data generated with no download, and real footage and digits that
                    Debian packages install
``checkpoint``      a model's complete state in one ``.npz`` (no pickle)
==================  ===========================================================================

The method (``abp_np.functional`` ... ``abp_np.abp``) never imports these; the run around it
(:mod:`abp_np.training`) writes its checkpoints through :mod:`~abp_np.io.checkpoint`.
"""
