"""``dafnet predict RUN1 RUN2 ...``: several exports (e.g. the folds of a cross-validation) predict
every case; their class probabilities on the input grid are averaged before the argmax, as
nnU-Net ensembles its folds. The exports must segment the same target into the same classes
with the same label map; each reads the case with its own preprocessing (its own planned
spacing, channel names and crop rule). One export is an ensemble of one."""

from __future__ import annotations

import time
from pathlib import Path

from dafnet.errors import DafnetError
from dafnet.inference.combine import CaseResult, combine
from dafnet.inference.inputs import InputCases
from dafnet.inference.predictor import Predictor


class Ensemble:
    """Exports that predict together; ``Ensemble(exports, **Predictor options)``."""

    def __init__(self, exports: list[str | Path], **options) -> None:
        if not exports:
            raise DafnetError("predict needs at least one export", hint="give a run folder or its export/")
        self.exports = [Path(e) for e in exports]
        self.members: list[Predictor] = []
        for export in self.exports:
            try:
                self.members.append(Predictor(export, **options))
            except DafnetError as exc:
                if len(self.exports) == 1:
                    raise
                raise DafnetError(f"export {export}: {exc.message}", hint=exc.hint) from exc
        self._check_agreement()
        first = self.members[0]
        self.target, self.class_names, self.mirror = first.target, first.class_names, first.mirror
        self.notes = list(dict.fromkeys(m.note for m in self.members if m.note))

    def _check_agreement(self) -> None:
        first = self.members[0]
        for member in self.members[1:]:
            for what, mine, theirs in (("target sequence is", first.target, member.target),
                                       ("classes are", list(first.class_names), list(member.class_names)),
                                       ("label map is", first.label_map, member.label_map)):
                if mine != theirs:
                    raise DafnetError(
                        f"export {member.export} does not fit the ensemble: its {what} {theirs!r}, "
                        f"those of {first.export} {mine!r}",
                        hint="ensemble exports of one task (the folds of one recipe); --target chooses the "
                             "target of all of them")

    def cases(self, inputs: InputCases,
              ignore_unknown: bool = False) -> tuple[dict[str, list[dict[str, Path]]], list[str]]:
        """(case -> the files of each export: modality -> image, cases without a target image).
        A sequence is unknown when no export knows it."""
        known = {c for m in self.members for c in m.channels(inputs).values()}
        listed = [m.cases(inputs, ignore_unknown, known) for m in self.members]
        usable, skipped = listed[0]
        for member, (theirs, _) in zip(self.members[1:], listed[1:]):
            if set(theirs) != set(usable):
                raise DafnetError(f"export {member.export} finds the target {self.target!r} in other cases of "
                                  f"{inputs.images_dir} than {self.members[0].export}",
                                  hint="its recipe names the input's channels differently (data.source.params."
                                       "channels); ensemble exports of one recipe")
        return {case: [files[case] for files, _ in listed] for case in usable}, skipped

    def predict_case(self, case: str, files: list[dict[str, Path]], out_dir: Path | None = None,
                     save_probabilities: bool = False) -> CaseResult:
        """Each export's probabilities of the case (``files``: one mapping per export), averaged;
        the mask (their argmax), overlay and probabilities written under ``out_dir``."""
        began = time.perf_counter()
        parts = [member.case_probabilities(case, f) for member, f in zip(self.members, files)]
        info = {"exports": [str(e) for e in self.exports], "mirror": self.mirror}
        result = combine(case, parts, files[0][self.target], self.class_names, out_dir, save_probabilities, info)
        result.seconds = time.perf_counter() - began
        return result
