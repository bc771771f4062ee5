"""Launch files and the default cell configuration (``cell.yaml``)."""
