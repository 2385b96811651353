from setuptools import find_packages, setup

setup(
    name="mindtune",
    version="0.1.0",
    description="Fine-tuning and RLHF for Llama-family models on MindSpore / MindFormers (Ascend NPUs, CPU for tests)",
    packages=find_packages(include=["mindtune", "mindtune.*"]),
    package_data={"mindtune": ["assets/*", "assets/**/*", "cpu_kernels/*.cc"]},
    include_package_data=True,
    python_requires=">=3.9,<3.12",
    install_requires=[
        "mindspore==2.9.0",
        "mindformers==1.9.0",
        "mindpet==1.0.4",
        "numpy==1.26.4",
        # pinned only to spare pip minutes of backtracking (see DESIGN.md)
        "datasets==4.0.0",
        "pyarrow==19.0.0",
        "opencv-python-headless==4.11.0.86",
        "transformers==4.57.1",
        "sentencepiece",
        "pyyaml",
        "tqdm",
        "safetensors",
        "tokenizers",
        "gguf",
        "jinja2",
        "matplotlib",
        # task metrics (mindtune eval); MindFormers installs them too, for its ADGEN metric
        "rouge-chinese",
        "nltk",
        "jieba",
    ],
    extras_require={"test": ["pytest", "pytest-xdist"]},
    entry_points={"console_scripts": ["mindtune=mindtune.cli:main"]},
)
