"""Built-in fine-tuning methods, one module each; importing this package registers them."""
from . import adapter, bitfit, full, linear, lora, lora_qkv, rlrr, ssf, vpt  # noqa: F401
