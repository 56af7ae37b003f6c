"""PIE-Bench's ten editing types (`editing_type_id`, README of cure-lab/PnPInversion) and TODInv's edit classes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from invbench.errors import ConfigError

# id -> (folder under annotation_images/, human name)
EDITING_TYPES: dict[int, tuple[str, str]] = {
    0: ("0_random_140", "random"),
    1: ("1_change_object_80", "change object"),
    2: ("2_add_object_80", "add object"),
    3: ("3_delete_object_80", "delete object"),
    4: ("4_change_attribute_content_40", "change content"),
    5: ("5_change_attribute_pose_40", "change pose"),
    6: ("6_change_attribute_color_40", "change color"),
    7: ("7_change_attribute_material_40", "change material"),
    8: ("8_change_background_80", "change background"),
    9: ("9_change_style_80", "change style"),
}


def edit_class_lookup(classes: Mapping[str, Sequence[int]]) -> dict[int, str]:
    """`{class: [type ids]}` (conf/edit_classes/*.yaml) -> `{type id: class}`; every type in exactly one class."""
    lookup: dict[int, str] = {}
    for edit_class, type_ids in classes.items():
        for type_id in type_ids:
            if type_id not in EDITING_TYPES:
                raise ConfigError(f"edit_classes.{edit_class}: {type_id} is not a PIE-Bench editing type (0-9)")
            if type_id in lookup:
                raise ConfigError(
                    f"edit_classes: editing type {type_id} is in both '{lookup[type_id]}' and '{edit_class}'"
                )
            lookup[type_id] = edit_class
    unassigned = sorted(set(EDITING_TYPES) - set(lookup))
    if unassigned:
        raise ConfigError(f"edit_classes: editing type(s) {unassigned} belong to no class; add each to one")
    return lookup
