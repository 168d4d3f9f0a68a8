from setuptools import setup

setup(
    name="beets-cnngenre",
    version="0.2.0",
    description="beets plugin: genre tagging from audio with convolutional neural networks",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    # beetsplug is a namespace package shared with beets and other plugins.
    packages=["beetsplug", "beetsplug.cnngenre", "genre_cnn_core", "genre_cnn_core.backbones"],
    package_data={"genre_cnn_core": ["data/*.safetensors", "data/*.json", "data/MUSICNN_LICENSE",
                                     "data/report_page.*"]},
    install_requires=[
        "beets>=2.14",
        "numpy>=1.24",
        "safetensors>=0.4.3,<1",  # model and weights files, through its numpy API
        "scipy>=1.10",  # FFT of the log-mel features (also needed by librosa)
        "soundfile>=0.12",
        "soxr>=0.3",
        "av>=12",
        "mutagen>=1.46",
        "mediafile>=0.17",  # genre_cnn_core.tagwrite; the version beets 2.14 requires
        "joblib>=1.4",
        "pyyaml>=5.1",  # lastgenre's genre tree and aliases
        "threadpoolctl>=3.1",  # one BLAS thread where the cores are busy
        "tqdm>=4.60",
    ],
    extras_require={
        # Training the scratch CNN and running on a GPU (--device cuda); the plain install predicts
        # with both backbones on the CPU and trains musicnn's head without it. 2.13 CPU wheels and
        # anything newer up to the next major; GPU users install their CUDA build of torch first.
        "torch": ["torch>=2.2,<2.14"],
        "plots": ["matplotlib"],
        "dask": ["dask[distributed]"],
        "report": ["plotly>=5,<8"],  # the page of `beet cnngenre --report`
        # librosa: the reference the log-mel features are tested against; ruff: the linter CI runs.
        "test": ["pytest>=7", "matplotlib", "plotly>=5,<8", "dask[distributed]", "librosa>=0.10", "ruff>=0.6"],
        "bench": ["scikit-learn", "matplotlib", "librosa>=0.10", "torch>=2.2,<2.14"],
    },
)
