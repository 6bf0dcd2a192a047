"""Data source ``nnunet``: multi-sequence MR in the nnU-Net v2 raw layout, relaxed for DAFNet.

Relaxations: a case may lack channels; each channel keeps its own geometry; labels are
per channel (``labelsTr/<case>_<XXXX>``) or nnU-Net's single ``labelsTr/<case>`` for the
channels on its grid. Each volume is reoriented to a slice stack, intensity-normalised,
resampled in-plane and cropped/padded (:mod:`dafnet.data.preprocess`); the records that
undo this are kept (:meth:`NnUNetDataSource.record`). See docs/data.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from dafnet.data import nifti
from dafnet.data.nnunet_layout import ROOT_KEY, CaseFiles, discover_cases, read_dataset_json
from dafnet.data.plans import Survey, header_spacing, stack_orientation
from dafnet.data.preprocess import (
    PreprocessRecord,
    field_of_view_plan,
    foreground_centroid,
    label_centroid,
    normalise_intensity,
    plan_in_plane,
    slice_positions,
)
from dafnet.data.preprocessed import IntensityParams, Millimetres, Pixels, PreprocessedSource, preparing
from dafnet.data.volume_checks import present_values, usable_slices, warn_if_normals_differ
from dafnet.errors import DafnetError
from dafnet.interfaces import Facts, Params, Subject, Volume


class NnUNetDataSource(PreprocessedSource):
    """Subjects from an nnU-Net v2 raw dataset folder (imagesTr/, labelsTr/, dataset.json)."""

    class Params(Params):
        root: str = Field(description="the dataset folder holding dataset.json, imagesTr/, labelsTr/")
        channels: list[str | int] | dict[str, str | int] | None = Field(
            None, description="modalities to read: a list of channel names (case-insensitive), or "
                              "{modality: channel name or index} to rename; default all channel_names")
        image_size: Pixels | tuple[Pixels, Pixels] = Field(
            (192, 192), description="slice size [H, W] after crop/pad (an int means square)")
        spacing_mm: Literal["auto"] | Millimetres | tuple[Millimetres, Millimetres] | None = Field(
            "auto", description="target in-plane spacing in mm (one value or [row, col]); auto: the "
                                "median over the training subjects' images of each axis (nnU-Net's "
                                "plan; stored in the run and its export); null keeps each file's spacing")
        intensity: IntensityParams = Field(default_factory=IntensityParams,
                                           description="intensity clipping and rescale to [-1, 1]")
        crop_center: Literal["image", "label", "foreground"] = Field(
            "image", description="centre of the crop/pad window: the image centre, the label's "
                                 "centroid (foreground when unlabelled), or the centroid of voxels "
                                 "brighter than the volume mean")
        label_map: dict[str, dict[int, int]] | None = Field(
            None, description="{modality or '*': {file value: class value}}: maps label file values "
                              "to dataset.json classes; 0 -> 0 unless mapped; another value "
                              "missing from a map is an error")
        volume_index: int | None = Field(
            None, ge=0, description="which volume of 4D files to read (0-based)")
        slice_axis: Literal["auto", 0, 1, 2] = Field(
            "auto", description="array axis slices are taken along; auto = the largest voxel "
                                "spacing (ties: the last axis; a length-1 axis wins)")
        reorient: bool = Field(
            True, description="put slices in radiological display order (rows anterior->posterior "
                              "for axial); false keeps the file's axis order")

    def __init__(self, params: NnUNetDataSource.Params, facts: Facts | None = None, *,
                 field_of_view: bool = False) -> None:
        super().__init__(params, facts if facts is not None else Facts())
        self.field_of_view = field_of_view
        """Keep each slice's whole field of view (``dafnet predict``'s sliding windows) instead of
        cropping to ``image_size``: the stacks then differ in size, and each record's ``window``
        says where the ``image_size`` crop lies (:func:`~dafnet.data.preprocess.field_of_view_plan`)."""
        self.root = Path(params.root).expanduser()
        if not self.root.is_dir():
            raise DafnetError(f"nnU-Net dataset folder {self.root} ({ROOT_KEY}) does not exist",
                              hint=f"set {ROOT_KEY} to the folder holding dataset.json, imagesTr/ and "
                                   "labelsTr/ (relative paths start at the working directory)")
        self.info = read_dataset_json(self.root)
        self._channels = self._select_channels()
        self._label_maps = self._check_label_map()
        self._subjects: list[Subject] | None = None
        self._records: dict[tuple[str, str], PreprocessRecord] = {}
        self._shared_labels: dict[Path, nifti.NiftiVolume] = {}
        """The current case's single label, decoded once for all its channels."""

    # ------------------------------------------------------------ declared facts
    @classmethod
    def facts_without_data(cls, params: NnUNetDataSource.Params) -> dict:
        size = params.image_size
        facts: dict = {"image_size": (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))}
        if isinstance(params.channels, dict):
            facts["modalities"] = tuple(params.channels)
        elif params.channels and all(isinstance(c, str) for c in params.channels):
            facts["modalities"] = tuple(c.lower() for c in params.channels)
        return facts

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self._channels)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.info.class_names


    # ------------------------------------------------------------ loading
    def survey(self) -> Survey:
        """Per case, each selected channel's in-plane spacing (headers only) and its labelled ones."""
        cases = discover_cases(self.root, self.info)
        survey = Survey()
        p = self.params
        for case, files in cases.items():
            present = {n: c for n, c in self._channels.items() if c in files.images}
            if present:
                survey.spacings[case] = {n: header_spacing(files.images[c], p.slice_axis, p.reorient)
                                         for n, c in present.items()}
                survey.labelled[case] = {n for n, c in present.items()
                                         if c in files.labels or files.shared_label is not None}
        return survey

    def load(self) -> list[Subject]:
        if self._subjects is None:
            cases = discover_cases(self.root, self.info)
            self._check_channels_present(cases)
            subjects = []
            for case, files in preparing(cases.items(), len(cases), f"preparing {self.root.name}"):
                self._shared_labels = {}
                volumes = {name: self._load_volume(case, name, channel, files)
                           for name, channel in self._channels.items() if channel in files.images}
                self._shared_labels = {}
                if volumes:
                    warn_if_normals_differ(case, volumes)
                    subjects.append(Subject(id=case, volumes=volumes))
            if not subjects:
                raise DafnetError(f"{self.root / 'imagesTr'} holds no images of the channels "
                                  f"{list(self._channels)}", hint="check the folder and channel_names")
            self._subjects = subjects
        return list(self._subjects)

    def _load_volume(self, case: str, name: str, channel: int, files: CaseFiles) -> Volume:
        p = self.params
        image_path = files.images[channel]
        image = nifti.read_volume(image_path, p.volume_index)
        bad = int(np.count_nonzero(~np.isfinite(image.data)))
        if bad:
            raise DafnetError(f"{image_path}: {bad} NaN or infinite voxels",
                              hint="replace them (e.g. by 0) or mask them before training")
        label = self._read_label(case, name, channel, files, image)
        orientation, in_spacing = stack_orientation(image.data.shape, image.affine, p.slice_axis, p.reorient)
        stack = orientation.apply(image.data)
        label = orientation.apply(label) if label is not None else None
        start, stop = usable_slices(stack, image_path)
        stack = stack[start:stop]
        label = label[start:stop] if label is not None else None
        normalised = normalise_intensity(stack, p.intensity.clip_percentiles, p.intensity.scope)
        plan = (stack.shape[1:], in_spacing, self.target_spacing(), self.image_size,
                self._crop_center(stack, label))
        transform, window = field_of_view_plan(*plan) if self.field_of_view else (plan_in_plane(*plan), None)
        record = PreprocessRecord(str(image_path), image.affine, orientation, (start, stop), transform, window)
        self._records[(case, name)] = record
        out = np.clip(transform.apply(normalised, "image"), -1.0, 1.0).astype(np.float32)
        out_label = transform.apply(label, "label").astype(np.int64) if label is not None else None
        return Volume(image=out, label=out_label, slice_positions=slice_positions(record.affine, out.shape),
                      affine=record.affine)

    def _read_label(self, case, name, channel, files: CaseFiles, image: nifti.NiftiVolume):
        path = files.labels.get(channel) or files.shared_label
        if path is None:
            return None
        shared = channel not in files.labels
        if shared:
            if path not in self._shared_labels:
                self._shared_labels[path] = nifti.read_volume(path, self.params.volume_index)
            label = self._shared_labels[path]
        else:
            label = nifti.read_volume(path, self.params.volume_index)
        same_grid = label.data.shape == image.data.shape and np.allclose(label.affine, image.affine,
                                                                         atol=1e-3, rtol=1e-4)
        if not same_grid:
            what = (f"the single label {path} of case {case!r} is shared by its channels, but its grid"
                    if shared else f"label {path}: its grid")
            raise DafnetError(
                f"{what} (shape {label.data.shape}) differs from image {image.path} (shape "
                f"{image.data.shape}){'' if label.data.shape != image.data.shape else ' in its affine'}",
                hint=(f"give per-channel labels labelsTr/{case}_XXXX for channels on other grids"
                      if shared else "resample the label onto the image grid"))
        values = label.data
        if not np.all(np.isfinite(values)) or not np.array_equal(values, np.round(values)):
            raise DafnetError(f"{path}: label values must be integers (class indices)",
                              hint="save labels as integer class maps, not probabilities")
        return self._map_labels(values.astype(np.int64), name, path)

    def _map_labels(self, values: np.ndarray, name: str, path: Path) -> np.ndarray:
        num_classes = len(self.class_names)
        mapping = self._label_maps.get(name, self._label_maps.get("*"))
        found = present_values(values)
        if mapping is None:
            outside = [int(v) for v in found if not 0 <= v <= num_classes]
            if outside:
                raise DafnetError(f"{path}: label values {outside} are not classes 0..{num_classes} of "
                                  f"{self.info.path}", hint="map them with data.source.params.label_map")
            return values
        unmapped = [int(v) for v in found if int(v) not in mapping]
        if unmapped:
            raise DafnetError(f"{path}: label values {unmapped} are not in label_map for {name!r} "
                              f"({mapping})", hint="add them to data.source.params.label_map")
        lookup = {int(v): mapping[int(v)] for v in found}
        out = np.zeros_like(values)
        for value, target in lookup.items():
            out[values == value] = target
        return out

    # ------------------------------------------------------------ parameter checks
    def _select_channels(self) -> dict[str, int]:
        """Modality name -> channel index, in the order given (default: channel index order)."""
        by_name = {n: i for i, n in self.info.channel_names.items()}
        chosen = self.params.channels
        if chosen is None:
            return {n: i for i, n in self.info.channel_names.items()}
        pairs = [(c, c) for c in chosen] if isinstance(chosen, list) else list(chosen.items())
        selected: dict[str, int] = {}
        for modality, ref in pairs:
            ref_key = str(ref).strip().lower()
            index = by_name.get(ref_key, int(ref_key) if ref_key.isdigit() else None)
            if index not in self.info.channel_names:
                raise DafnetError(f"data.source.params.channels names {ref!r}, which is not a channel of "
                                  f"{self.info.path}", hint=f"channels: {list(by_name)}")
            if index in selected.values():
                raise DafnetError(f"data.source.params.channels selects channel {ref!r} twice")
            name = self.info.channel_names[index] if isinstance(chosen, list) else str(modality)
            if name in selected:
                raise DafnetError(f"data.source.params.channels names modality {name!r} twice")
            selected[name] = index
        if not selected:
            raise DafnetError("data.source.params.channels selects no channel",
                              hint=f"channels: {list(by_name)}")
        return selected

    def _check_label_map(self) -> dict[str, dict[int, int]]:
        """The label maps, each with background 0 -> 0 unless it maps 0 itself."""
        maps = {key: {0: 0, **mapping} for key, mapping in (self.params.label_map or {}).items()}
        num_classes = len(self.class_names)
        for key, mapping in maps.items():
            if key != "*" and key not in self._channels:
                raise DafnetError(f"data.source.params.label_map names {key!r}, not a modality",
                                  hint=f"use one of {list(self._channels)} or '*' for all")
            bad = {v: c for v, c in mapping.items() if not 0 <= c <= num_classes}
            if bad:
                raise DafnetError(f"data.source.params.label_map[{key!r}] maps to {bad}, outside the "
                                  f"classes 0..{num_classes} of {self.info.path}")
        return maps

    def _check_channels_present(self, cases: dict[str, CaseFiles]) -> None:
        present = {c for files in cases.values() for c in files.images}
        for name, channel in self._channels.items():
            if channel not in present:
                raise DafnetError(f"channel {channel:04d} ({name!r}) has no image in "
                                  f"{self.root / 'imagesTr'} (no file *_{channel:04d}"
                                  f"{self.info.file_ending or '.nii.gz'})",
                                  hint="add the files or drop it from data.source.params.channels")

    def _crop_center(self, stack: np.ndarray, label: np.ndarray | None):
        mode = self.params.crop_center
        if mode == "image":
            return None
        if mode == "label" and label is not None:
            centre = label_centroid(label)
            if centre is not None:
                return centre
        return foreground_centroid(stack)
