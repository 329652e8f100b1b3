"""The speed routes: the same operations as :mod:`abp_np.functional`, faster, never different.

Nothing here is needed to understand the method; everything here is checked against the plain
``xp`` reference in :mod:`abp_np.functional`, which is the oracle of the tests.

==================  ===========================================================================
module              what it holds
==================  ===========================================================================
``routes``          the route table: for each operation its routes in order, the reference last
                    (:func:`abp_np.fast.routes.choose`), under the switch
                    :func:`abp_np.backend.using`
``columns``         the CPU's NumPy forms of the transposed convolution: phase form, column
                    blocks, blocked backward
``phases``          the sub-pixel phase arithmetic that ``columns`` and ``winograd`` share
``winograd``        the CPU transposed convolution as Winograd F(m x m, 3 x 3) GEMMs
``winograd1d``      the CPU's 1-D transposed convolutions (sound) as Winograd F(4, 3) GEMMs
``cpu``             the C kernels of ``kernels/*_cpu.c`` (Winograd transforms, 2-D and 1-D,
                    batch norm, the column form's col2im and im2col, ReLU, stacks of GEMMs by
                    NumPy's OpenBLAS), their loops in ranges on a C thread pool, compiled once
                    with the system's C compiler and called through ctypes
``threads``         the CPU loops outside the GEMMs split over threads (``parallel_for``),
                    stacks of small GEMMs one per thread (``stacked_matmul``), the thread
                    count (``ABP_NUM_THREADS``), OpenBLAS' own thread count
``elementwise``     the activations on ranges of elements, on several threads
``cuda``            the CUDA kernels of ``kernels/deconv.cu`` and ``kernels/batchnorm.cu``
                    through one ``cupy.RawModule``
``cublas``          cuBLAS's GEMM called directly (ctypes), which a CUDA graph can record
``cuda_graph``      the Langevin loop recorded once as a CUDA graph and replayed
==================  ===========================================================================

These modules import :mod:`abp_np.backend` and each other, never the method above them
(``tests/test_imports.py`` checks it).
"""
