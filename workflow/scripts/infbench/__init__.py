"""infbench: the library behind the workflow's scripts (docs/architecture.md)."""

# the workflow's release (CHANGELOG.md, CITATION.cff, the git tag v<version>): every
# result's provenance records it
__version__ = "0.1.0"

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
