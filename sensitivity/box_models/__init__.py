"""Box models shipped with the package (data only: importing this imports nothing heavy)."""

from pathlib import Path

#: The box model ``sensitivity localize`` applies by default and every fit tries as its prior: fitted by the
#: workflow on the 910 ImageNet val photos of the shared sample (``make box-model``, configs/box_model.yaml).
SHIPPED_BOX_MODEL = Path(__file__).parent / "imagenet_efficientnet_lite0.npz"
