"""medtl: transfer learning and domain adaptation for medical images."""
__version__ = "0.1.0"
