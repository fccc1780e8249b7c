"""medtl: transfer learning and domain adaptation for medical images."""
from medtl import _lazy_monai

__version__ = "0.1.0"

_lazy_monai.install()  # MONAI's optional dependencies load when used: a command answers in a fraction of the time
