"""The tools around the method: experiments' metrics and baselines, the command line, the
benchmark and charts.

==================  ===========================================================================
module              what it holds
==================  ===========================================================================
``evaluation``      the paper's error measure, latent grids and paths (re-exports the baselines)
``baselines``       the baselines: PCA, probabilistic PCA with missing data (EM),
                    interpolation from neighbours, total-variation inpainting, the vector
                    auto-regression of dynamic textures
``occlusion``       the paper's occlusion masks (salt-and-pepper P.x, squares Mx)
``plot``            line and bar charts as PNG, with NumPy alone
``cli``             the ``abp`` command
``bench``           ``python -m abp_np.bench``: whole ABP iterations timed, against PyTorch
==================  ===========================================================================

The method never imports these.
"""
