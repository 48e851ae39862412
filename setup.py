"""fastconv: hand-written convolution and pooling kernels (NumPy, Numba, Numba-CUDA, CuPy).

The top-level folder ``kernels/`` (device code) installs as ``fastconv.kernels``.
"""
from setuptools import setup

CUDA = [
    "numba>=0.60",
    "numba-cuda>=0.30",
    # NVRTC pinned to the release of the system ptxas and the GPU driver (CUDA 13.0):
    # numba-cuda[cu13] would pull NVVM 13.5, whose PTX 9.5 neither accepts.
    "nvidia-cuda-nvrtc==13.0.*",
    "cupy-cuda13x>=14",
]
BENCH = ["matplotlib>=3.7", "tqdm>=4.60", "pytest-benchmark>=4", "pytest>=7", "pillow>=9",
         "threadpoolctl>=3"]
TEST = CUDA + [
    "pytest>=7",
    "pytest-benchmark>=4",
    "hypothesis>=6",
    "scipy>=1.10",
    "opencv-python-headless>=4.8",
    "pillow>=9",
    # the CPU build that ships on the project's machines; a looser pin pulls a CUDA build
    "torch==2.13.0",
    "matplotlib>=3.7",
    "tqdm>=4.60",
    "threadpoolctl>=3",
    "scikit-learn>=1.3",  # the digits data set of the LeNet-5 training example
]

setup(
    name="fastconv",
    version="0.1.0",
    description="Hand-written 2-D convolution and pooling kernels, drop-in for "
                "torch.nn.functional, on NumPy, Numba (CPU), Numba-CUDA and CuPy",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=["fastconv", "fastconv.wrappers", "fastconv.cudaemu", "fastconv.perf", "fastconv.kernels"],
    package_dir={"fastconv": "fastconv", "fastconv.kernels": "kernels"},
    package_data={"fastconv.kernels": ["*.cu", "*.cuh"], "fastconv.cudaemu": ["*.h"]},
    include_package_data=True,
    install_requires=["numpy>=1.24"],
    extras_require={
        "cpu": ["numba>=0.60"],
        "cuda": CUDA,
        "bench": BENCH,
        "test": TEST,
    },
    entry_points={"console_scripts": ["fastconv = fastconv.cli:main"]},
    zip_safe=False,
)
