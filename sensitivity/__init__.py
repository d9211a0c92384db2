"""Fast object localization via sensitivity analysis of pretrained image classifiers."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sensitivity-loc")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"
