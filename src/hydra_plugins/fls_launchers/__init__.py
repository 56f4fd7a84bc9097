"""Submitit launchers that report dead jobs as failed cells and can submit without waiting."""
