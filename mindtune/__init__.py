"""mindtune: fine-tuning and RLHF for Llama-family models on MindSpore / MindFormers."""
__version__ = "0.1.0"
