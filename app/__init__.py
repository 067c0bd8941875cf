"""tpa-gis: Targeted Poverty Alleviation GIS."""

__version__ = "0.1.0"
