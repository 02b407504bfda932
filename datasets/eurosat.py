"""EuroSAT RGB (CoOp layout: ``eurosat/2750/<class>/`` + ``split_zhou_EuroSAT.json``)."""
from dassl.data.datasets import DATASET_REGISTRY

from .base import BenchmarkDataset

# Folder names are CamelCase codes; CoOp's prompts use these longer names.
NEW_CLASSNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(BenchmarkDataset):
    """10 land-use classes of Sentinel-2 tiles."""

    template = "a centered satellite photo of {}."  # zero-shot prompt (CoOp's)
    dataset_dir = "eurosat"
    short_name = "eurosat"
    image_dir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    required_paths = ("2750",)
    raw_split_paths = ()

    def build_split(self):
        return self.read_and_split_data(self.image_dir, new_cnames=NEW_CLASSNAMES)
