"""The data map as code: collections, fields, classifications, purposes, retention."""

from fiduciary.datamap.loader import load, load_default, load_file, parse
from fiduciary.datamap.model import (
    Classification,
    CollectionSpec,
    DataMap,
    FieldSpec,
    FieldType,
    LawfulBasis,
    Purpose,
    RetentionRule,
    ThirdParty,
)

__all__ = [
    "Classification",
    "CollectionSpec",
    "DataMap",
    "FieldSpec",
    "FieldType",
    "LawfulBasis",
    "Purpose",
    "RetentionRule",
    "ThirdParty",
    "load",
    "load_default",
    "load_file",
    "parse",
]
