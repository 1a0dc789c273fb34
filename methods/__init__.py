"""Built-in fine-tuning methods, one module each; importing this package registers them."""
from . import full, linear  # noqa: F401
