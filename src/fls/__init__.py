"""fls-sweeps: Free-Lunch Saliency agents, trained and measured in Hydra sweeps."""

__version__ = "0.1.0"
