"""The only place where Qt meets the core: QObject workers on dedicated threads."""
