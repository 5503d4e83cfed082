"""dsvl: DeepSeek-VL-style training recipes."""
__version__ = "0.1.0"
