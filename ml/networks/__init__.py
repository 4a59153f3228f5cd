"""Network definitions (pure torch). Networks return logits; post-processing lives in ml.inference."""
from .unet import UNet3D, UNetConfig

__all__ = ["UNet3D", "UNetConfig"]
