"""vl-lottery: find lottery tickets in vision-and-language transformers on DeepSpeed."""

__version__ = "0.1.0"
