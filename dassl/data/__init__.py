"""``dassl.data``: datasets, transforms, samplers and the DataManager."""
from .data_manager import DataManager, DatasetWrapper

__all__ = ["DataManager", "DatasetWrapper"]
