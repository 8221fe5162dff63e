"""The job spec: one pydantic schema for the trainer, the HTTP API and the store.

``JobSpec`` holds the shape of a job (API.md's body) and checks what one field
alone can check. ``resolve_spec`` then fills the defaults that depend on the
mode (METHOD.md: "Defaults should follow the mode") and runs the checks that
need several fields or the catalog, reporting every problem at once as a
``SpecError``. A resolved spec has no ``None`` left where a value is used, so
a job is reproducible from its ``spec.json`` alone.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from otrt_core.catalog import catalog, is_dataset_file
from otrt_core.errors import Problem, UserError, nearest_first
from otrt_core.protocol import (
    DEFAULT_EPSILON,
    DEFAULT_MAX_ITER,
    MAX_CLASSES,
    NORMALIZATIONS,
    SOLVERS,
    SPATIAL_MODES,
)

Mode = Literal["supervised", "transfer", "distill", "transfer_distill"]
RegularizerKind = Literal["none", "ot", "l2sp", "kd", "fitnet", "at", "wkd_f"]
KDKind = Literal["kl", "wkd"]
Solver = Literal[SOLVERS]  # type: ignore[valid-type]
Spatial = Literal[SPATIAL_MODES]  # type: ignore[valid-type]
Normalize = Literal[NORMALIZATIONS]  # type: ignore[valid-type]

MODES_WITH_TEACHER = ("transfer", "distill", "transfer_distill")

# A weight of "auto" is set from the first steps so that the term's gradient on the
# student is a fixed fraction of the task loss's (otrt_core.train.balance).
AUTO: Literal["auto"] = "auto"

# The terms each mode turns on when a job names none, balanced against the task ("auto"):
# the best mean rank of each mode's settings on the service's defaults in the
# equal-budget table (bench/equal_tuning.py table, docs/reproduce.md). distill: WKD-L
# (the regularizer "kd" with kd.kind "wkd"); transfer_distill: OT, blind to either
# side's scale ("rms").
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "supervised": {"kind": "none", "weight": 0.0, "normalize": "none"},
    # In transfer the student starts as the teacher: the term and its gradient start
    # at 0, with nothing for "auto" to balance; standardize is blind to scale already.
    "transfer": {"kind": "ot", "weight": 1.0, "normalize": "standardize"},
    "distill": {"kind": "kd", "kd_kind": "wkd", "weight": AUTO, "normalize": "rms"},
    "transfer_distill": {"kind": "ot", "weight": AUTO, "normalize": "rms"},
}
# The fraction of the task loss's gradient norm an "auto" weight gives its term, by
# kind: a term on the teacher's logits (KD, WKD-L) 0.5, one on its representations 0.2
# (OT at 0.5 collapsed 2 of 4 runs on MNIST with few labels; bench/reproduce.py --only
# mnist-few, docs/terms.md).
LOGIT_AUTO_RATIO = 0.5
REPRESENTATION_AUTO_RATIO = 0.2


# Bounds on what a job may ask for: every number a user sends is finite and
# bounded, so no value that passes submission can fail or blow up at run time.
MAX_WEIGHT = 1e6  # any loss weight (lambda, KD, a layer pair's, L2-SP's beta)
MAX_LR = 10.0
MAX_SEED = 2**32 - 1  # what every RNG of numpy and torch accepts
METADATA_MAX_KEYS = 32
METADATA_MAX_KEY_CHARS = 64
METADATA_MAX_VALUE_CHARS = 1024
NAME_MAX_CHARS = 200  # architecture names, ids and paths


class _Strict(BaseModel):
    # Unknown fields are errors, and so are NaN and infinities (JSON's Infinity included).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class ModelInput(_Strict):
    """The inputs a model expects (otrt_core.models.views): the dataset's batches are
    taken to their own scale, resized, converted and normalized for that model."""

    size: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        default=None, min_length=1, max_length=2, description="Spatial size (bilinear resize)."
    )
    channels: int | None = Field(default=None, ge=1, le=4, description="1 (grey) or 3 (RGB).")
    mean: list[Annotated[float, Field(ge=-1e6, le=1e6)]] | None = Field(
        default=None, min_length=1, max_length=4, description="Per channel; default 0."
    )
    std: list[Annotated[float, Field(gt=0.0, le=1e6)]] | None = Field(
        default=None, min_length=1, max_length=4, description="Per channel; default 1."
    )

    def shape_for(self, dataset_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of one input after this view of the dataset's ``dataset_shape``;
        ``UserError`` if the view cannot apply."""
        channels, spatial = dataset_shape[0], dataset_shape[1:]
        if self.size is not None and len(self.size) != len(spatial):
            raise UserError(
                f"input.size {self.size} has {len(self.size)} dimensions, but the "
                f"dataset's inputs {list(dataset_shape)} have {len(spatial)} spatial ones"
            )
        out_channels = self.channels or channels
        if out_channels != channels and {channels, out_channels} != {1, 3}:
            raise UserError(
                f"input.channels {out_channels}: otrt converts grey (1) and RGB (3) into "
                f"each other, not {channels} channels into {out_channels}"
            )
        for name, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) != out_channels:
                raise UserError(f"input.{name} needs {out_channels} values, one per channel")
        return (out_channels, *(self.size or spatial))


def takes_flattened(expected: tuple[int, ...], seen: tuple[int, ...]) -> bool:
    """Whether a model of flat inputs ``expected`` takes inputs of shape ``seen`` flattened
    (the 64 values of an 8x8 image, for a scikit-learn model)."""
    return len(expected) == 1 and len(seen) > 1 and math.prod(seen) == expected[0]


class TeacherSpec(_Strict):
    architecture: str | None = Field(
        default=None,
        max_length=NAME_MAX_CHARS,
        description="The zoo architecture of a state dict; an ONNX graph needs none.",
    )
    checkpoint: str = Field(
        max_length=1000,
        description="An uploaded file (file_…), a finished job (job_…), "
        "or a path for `otrt train`.",
    )
    input: ModelInput | None = Field(
        default=None, description="The teacher's own inputs. Default: the dataset's."
    )


class StudentSpec(_Strict):
    architecture: str | None = Field(
        default=None,
        max_length=NAME_MAX_CHARS,
        description="A zoo architecture. In transfer, default and only choice: the teacher's "
        "(its graph, for an ONNX teacher).",
    )
    input: ModelInput | None = Field(
        default=None,
        description="The student's own inputs. Default: the dataset's (the teacher's in transfer).",
    )
    init: str | None = Field(
        default=None,
        max_length=1000,
        description="Start from an uploaded model (file_…): a state dict of `architecture`, or "
        "an ONNX graph, which becomes the student (no `architecture`). Or a path for `otrt train`.",
    )


AUGMENT_DEFAULTS = {"crop": ("padding", 4), "rotate": ("degrees", 15.0), "noise": ("std", 0.1)}


class AugmentOp(_Strict):
    """One random transformation (otrt_core.train.augment); its one parameter, if any."""

    op: Literal["crop", "flip", "rotate", "noise"]
    padding: int | None = Field(default=None, ge=1, le=64, description="crop: pixels.")
    degrees: float | None = Field(default=None, gt=0.0, le=180.0, description="rotate.")
    std: float | None = Field(default=None, gt=0.0, le=10.0, description="noise.")

    @model_validator(mode="after")
    def _one_parameter_of_its_own(self) -> AugmentOp:
        own = AUGMENT_DEFAULTS.get(self.op, (None, None))[0]
        for name in ("padding", "degrees", "std"):
            if name != own and getattr(self, name) is not None:
                raise ValueError(f"{self.op} takes no {name}")
        return self

    def amount(self) -> float:
        """Its parameter, or the op's default (0 for flip)."""
        name, default = AUGMENT_DEFAULTS.get(self.op, (None, 0.0))
        value = getattr(self, name) if name else None
        return float(default if value is None else value)


class DatasetSpec(_Strict):
    name: str = Field(max_length=1000)
    classes: list[Annotated[int, Field(ge=0, lt=MAX_CLASSES)]] | None = Field(
        default=None,
        max_length=MAX_CLASSES,
        description="Keep these classes, relabelled 0..k-1 in this order.",
    )
    train_subset: int | None = Field(
        default=None, ge=1, le=10**9, description="Labeled training examples kept per class."
    )
    val_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)
    unlabeled: str | None = Field(
        default=None,
        max_length=NAME_MAX_CHARS,
        description="A registered dataset (ds_…) whose images are the unlabeled pool that "
        "regularizer.unlabeled and kd.unlabeled read (any labels ignored), instead of the "
        "training inputs train_subset leaves out. Decoded in the labeled data's view.",
    )
    augment: Literal["none", "standard"] | list[AugmentOp] = Field(
        default="none",
        max_length=8,
        description="Random views of the training inputs: `standard` (crop with 4-pixel "
        "padding, then horizontal flip, for images) or a list of ops.",
    )
    image_size: (
        Annotated[int, Field(ge=8, le=1024)]
        | Annotated[list[Annotated[int, Field(ge=8, le=1024)]], Field(min_length=2, max_length=2)]
        | None
    ) = Field(
        default=None,
        description="A registered dataset's images are decoded to this size (an int for a "
        "square, or [h, w]): under `augment: standard` a random resized crop and flip, for "
        "evaluation a resize and center crop. Default: the largest input.size of teacher and "
        "student, else the median image size capped at 224.",
    )

    def image_hw(self) -> tuple[int, int] | None:
        """``image_size`` as (h, w), if set."""
        size = self.image_size
        if size is None:
            return None
        return (size, size) if isinstance(size, int) else (size[0], size[1])


Weight = Annotated[float, Field(ge=0.0, le=MAX_WEIGHT)] | Literal["auto"]


AutoRatio = Annotated[
    float,
    Field(
        gt=0.0,
        le=100.0,
        description="With weight \"auto\": the term's gradient norm over the task loss's, "
        "on the first batches.",
    ),
]


def is_auto(weight: float | str | None) -> bool:
    return weight == AUTO


class LayerPairSpec(_Strict):
    teacher: str = "penultimate"
    student: str = "penultimate"
    weight: Weight = Field(
        default=1.0,
        description='w_l, or "auto": each auto pair\'s gradient an equal share of the '
        "task loss's before lambda applies.",
    )


class RegularizerSpec(_Strict):
    kind: RegularizerKind | None = Field(default=None, description="Default: by mode.")
    weight: Weight | None = Field(
        default=None,
        description='lambda, or "auto" (its gradient auto_ratio times the task loss\'s, set '
        'from the first steps; spec.json records the number). Default: "auto" for every '
        "kind but l2sp (0.1).",
    )
    auto_ratio: AutoRatio | None = Field(
        default=None, description="Default: 0.5 for kd, 0.2 for the others (docs/terms.md)."
    )
    layers: list[LayerPairSpec] = Field(
        default_factory=lambda: [LayerPairSpec()], min_length=1, max_length=64
    )
    solver: Solver = "auto"
    epsilon: float = Field(default=DEFAULT_EPSILON, gt=0.0, le=100.0)
    max_iter: int = Field(default=DEFAULT_MAX_ITER, ge=1, le=100_000)
    spatial: Spatial = "pool"
    normalize: Normalize | None = Field(default=None, description="Default: by mode.")
    unlabeled: bool = False
    unlabeled_batch_size: int | None = Field(default=None, ge=1, le=65_536)
    l2sp_beta: float = Field(
        default=0.01, ge=0.0, le=MAX_WEIGHT, description="L2-SP's weight on the new head."
    )


class KDSpec(_Strict):
    kind: KDKind = Field(
        default="kl",
        description="kl: Hinton's KD; wkd: WKD-L, entropic OT between the non-target "
        "classes' distributions over a cost between classes from the teacher (METHOD.md).",
    )
    weight: Weight = Field(
        default=0.0, description='Added KD\'s weight (gamma for wkd), or "auto"; 0 is off.'
    )
    temperature: float = Field(default=4.0, gt=0.0, le=1000.0)
    unlabeled: bool | None = Field(
        default=None,
        description="KD also on the unlabeled batch, with the teacher's soft labels (the "
        "transfer set). Default: regularizer.unlabeled.",
    )
    auto_ratio: AutoRatio = LOGIT_AUTO_RATIO

    @property
    def on(self) -> bool:
        return self.weight != 0


class TrainingSpec(_Strict):
    epochs: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Default: from the labeled set's size, at least 2000 optimizer steps and "
        "20 epochs (docs/training.md); spec.json records the value used.",
    )
    batch_size: int | None = Field(
        default=None,
        ge=1,
        le=65_536,
        description="Default: an eighth of the labeled set, between 8 and 128.",
    )
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float | None = Field(
        default=None,
        gt=0.0,
        le=MAX_LR,
        description="Default: 0.05 (SGD) or 0.001 (AdamW) at batch 128, scaled with the batch.",
    )
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=5e-4, ge=0.0, le=1.0)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    amp: Literal["auto", "on", "off"] = "auto"
    teacher_cache: Literal["auto", "off"] = "auto"
    teacher_views: int = Field(
        default=4,
        ge=1,
        le=64,
        description="With augmentation, augmented views per image whose teacher outputs "
        "the cache keeps (one is drawn per image and epoch).",
    )
    select: Literal["best", "last"] = "best"
    max_runtime_s: int = Field(default=86_400, ge=1, le=7 * 86_400)
    patience: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="Stop once validation accuracy has not improved for this many epochs.",
    )
    label_smoothing: float = Field(
        default=0.0, ge=0.0, lt=1.0, description="Of the task's cross-entropy (not of KD)."
    )
    warmup_epochs: float = Field(
        default=0.0,
        ge=0.0,
        le=1000.0,
        description="Linear warm-up of the learning rate from 0 over this many epochs.",
    )
    gpus: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Devices the job trains on at once: one process each under torchrun "
        "(DDP), each on its share of every batch; on the CPU, that many gloo processes.",
    )


class JobSpec(_Strict):
    mode: Mode
    teacher: TeacherSpec | None = None
    student: StudentSpec
    dataset: DatasetSpec
    regularizer: RegularizerSpec = Field(default_factory=RegularizerSpec)
    kd: KDSpec = Field(default_factory=KDSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    priority: int = Field(
        default=0,
        ge=-10,
        le=10,
        description="Order among the owner's own queued jobs (higher first); owners take turns.",
    )
    metadata: dict[str, str] = Field(
        default_factory=dict,
        max_length=METADATA_MAX_KEYS,
        description=f"Up to {METADATA_MAX_KEYS} string pairs: keys of at most "
        f"{METADATA_MAX_KEY_CHARS} characters, values of at most {METADATA_MAX_VALUE_CHARS}.",
    )

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, metadata: dict[str, str]) -> dict[str, str]:
        for key, value in metadata.items():
            if not 0 < len(key) <= METADATA_MAX_KEY_CHARS:
                raise ValueError(f"metadata keys have 1 to {METADATA_MAX_KEY_CHARS} characters")
            if len(value) > METADATA_MAX_VALUE_CHARS:
                raise ValueError(
                    f"metadata[{key!r}] is longer than {METADATA_MAX_VALUE_CHARS} characters"
                )
        return metadata


class SpecError(ValueError):
    """Every problem found in a spec, reported at once."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))

    def __reduce__(self):  # crosses process pools whole (the default passes the message)
        return type(self), (self.problems,)

    @classmethod
    def from_validation_error(cls, error: ValidationError) -> SpecError:
        return cls([Problem(tuple(e["loc"]), e["msg"]) for e in error.errors()])


# Which regularizers each mode admits (METHOD.md's table: L2-SP needs transferred
# weights, KD needs the teacher's task).
KINDS_BY_MODE: dict[str, tuple[str, ...]] = {
    "supervised": ("none",),
    "transfer": ("none", "ot", "l2sp", "fitnet", "at", "wkd_f"),
    "distill": ("none", "ot", "kd", "fitnet", "at", "wkd_f"),
    "transfer_distill": ("none", "ot", "fitnet", "at", "wkd_f"),
}


def resolve_spec(data: dict[str, Any] | JobSpec) -> JobSpec:
    """A complete, checked spec: mode defaults filled, every problem reported at once.

    Raises ``SpecError`` listing each problem with its location.
    """
    try:
        spec = data if isinstance(data, JobSpec) else JobSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError.from_validation_error(error) from None
    spec = _fill_mode_defaults(spec)
    problems = _check(spec)
    if problems:
        raise SpecError(problems)
    return spec


# A kind named without a weight is balanced against the task, since the literature's
# weights (100 for FitNets, 1000 for AT) assume a teacher's scale; L2-SP's alpha (Li et
# al.) acts on weights, not on a gradient there is at the start, so it keeps its number.
DEFAULT_WEIGHTS: dict[str, float | str] = {"none": 0.0, "l2sp": 0.1}
# Kinds whose term reads unlabeled inputs (through the teacher).
POOL_KINDS = ("ot", "fitnet", "at", "kd", "wkd_f")
# Kinds whose term compares layer pairs (regularizer.layers).
LAYER_KINDS = ("ot", "fitnet", "at", "wkd_f")


def _fill_mode_defaults(spec: JobSpec) -> JobSpec:
    defaults = MODE_DEFAULTS[spec.mode]
    regularizer, kd = spec.regularizer, spec.kd
    # The mode's term, unless the job names one; a job that turns KD on itself gets no
    # second logit term beside it.
    default_kind = "none" if defaults["kind"] == "kd" and kd.on else defaults["kind"]
    kind = regularizer.kind or default_kind
    mode_term = regularizer.kind is None and kind == defaults["kind"]
    same = kind == defaults["kind"]
    default_weight = defaults["weight"] if same else DEFAULT_WEIGHTS.get(kind, AUTO)
    kd_kind = kd.kind
    if mode_term and "kind" not in kd.model_fields_set:
        kd_kind = defaults.get("kd_kind", kd.kind)
    # KD reads the pool when asked, by default when the representation term does.
    kd_unlabeled = kd.unlabeled if kd.unlabeled is not None else regularizer.unlabeled and kd.on
    reads_pool = regularizer.unlabeled or kd_unlabeled
    kind_ratio = LOGIT_AUTO_RATIO if kind == "kd" else REPRESENTATION_AUTO_RATIO
    updates = {
        "kind": kind,
        "weight": regularizer.weight if regularizer.weight is not None else default_weight,
        "auto_ratio": regularizer.auto_ratio or kind_ratio,
        "normalize": regularizer.normalize or defaults["normalize"],
        # Without one, the unlabeled batch is the labeled batch (set by the trainer if sized).
        "unlabeled_batch_size": regularizer.unlabeled_batch_size
        or (spec.training.batch_size if reads_pool else None),
    }
    if kind == "wkd_f":
        updates["layers"] = [_on_maps(pair, spec) for pair in regularizer.layers]
    spec = spec.model_copy(
        update={
            "regularizer": regularizer.model_copy(update=updates),
            "kd": kd.model_copy(update={"unlabeled": kd_unlabeled, "kind": kd_kind}),
        }
    )
    if spec.mode == "transfer" and spec.teacher is not None:
        student = {
            "architecture": spec.student.architecture or spec.teacher.architecture,
            "input": spec.student.input or spec.teacher.input,
        }
        spec = spec.model_copy(update={"student": spec.student.model_copy(update=student)})
    return spec


def _on_maps(pair: LayerPairSpec, spec: JobSpec) -> LayerPairSpec:
    """WKD-F compares feature maps: a side left at ``penultimate`` (a vector) takes its
    zoo model's last stage before it, the last map before pooling."""
    sides = {"teacher": spec.teacher.architecture if spec.teacher else None}
    sides["student"] = spec.student.architecture
    update = {}
    for side, architecture in sides.items():
        stages = _stages(architecture)
        if getattr(pair, side) == "penultimate" and stages and stages.index("penultimate") > 0:
            update[side] = stages[stages.index("penultimate") - 1]
    return pair.model_copy(update=update)


def _check(spec: JobSpec) -> list[Problem]:
    known, datasets = catalog(), catalog().datasets
    problems: list[Problem] = []

    def problem(loc: tuple[str | int, ...], msg: str) -> None:
        problems.append(Problem(loc, msg))

    # Catalog names; only a graph (an ONNX teacher, or its copy in transfer) has none.
    graph_teacher = spec.teacher is not None and spec.teacher.architecture is None
    init = spec.student.init
    if init is not None and spec.mode == "transfer":
        problem(("student", "init"), "mode 'transfer' starts the student from the teacher")
    if init is not None and init.startswith("job_"):
        problem(("student", "init"), "name an uploaded model (file_…)")
    if spec.student.architecture is None:
        graph_student = init is not None and is_graph_reference(init)
        if not (spec.mode == "transfer" and graph_teacher) and not graph_student:
            problem(
                ("student", "architecture"),
                "a student architecture is needed (or an ONNX graph as student.init)",
            )
    elif not known.knows(spec.student.architecture):
        problem(("student", "architecture"), _unknown_architecture(spec.student.architecture))
    if spec.teacher and graph_teacher and not is_graph_reference(spec.teacher.checkpoint):
        problem(
            ("teacher", "architecture"),
            "a state dict needs its architecture (only an ONNX graph is a whole model)",
        )
    elif spec.teacher and not graph_teacher and not known.knows(spec.teacher.architecture):
        problem(("teacher", "architecture"), _unknown_architecture(spec.teacher.architecture))
    dataset = datasets.get(spec.dataset.name)
    if dataset is None and not is_dataset_file(spec.dataset.name):
        valid = (*datasets, "file_… (an upload)", "a path to a .npz or .zip")
        problem(("dataset", "name"), _unknown("dataset", spec.dataset.name, valid))

    # The mode's teacher and regularizers.
    if spec.mode == "supervised" and spec.teacher is not None:
        problem(("teacher",), "mode 'supervised' trains without a teacher: remove it")
    if spec.mode in MODES_WITH_TEACHER and spec.teacher is None:
        problem(("teacher",), f"mode {spec.mode!r} needs a teacher")
    if (
        spec.mode == "transfer"
        and spec.teacher
        and spec.teacher.architecture != spec.student.architecture
    ):
        teachers = repr(spec.teacher.architecture) if spec.teacher.architecture else "graph"
        problem(
            ("student", "architecture"),
            f"mode 'transfer' starts the student from the teacher's weights, so its "
            f"architecture must be the teacher's ({teachers}): leave it out",
        )
    allowed = KINDS_BY_MODE[spec.mode]
    if spec.regularizer.kind not in allowed:
        problem(
            ("regularizer", "kind"),
            f"mode {spec.mode!r} admits regularizers {', '.join(allowed)}; "
            f"got {spec.regularizer.kind!r}",
        )
    if spec.kd.on and spec.mode != "distill":
        problem(("kd", "weight"), "KD needs the teacher's task: only mode 'distill' can add it")
    if spec.kd.on and spec.regularizer.kind == "kd":
        problem(
            ("kd", "weight"),
            "regularizer.kind 'kd' is KD already (regularizer.weight weighs it): leave kd.weight "
            "at 0, or pick another regularizer.kind to add KD to",
        )
    if spec.kd.unlabeled and not spec.kd.on and spec.regularizer.kind != "kd":
        problem(("kd", "unlabeled"), 'KD is off: set kd.weight (a number or "auto")')

    # Dataset options.
    if dataset and spec.dataset.classes is not None:
        classes = spec.dataset.classes
        if len(classes) < 2:
            problem(("dataset", "classes"), "keep at least two classes")
        if len(set(classes)) != len(classes):
            problem(("dataset", "classes"), "classes must be distinct")
        if any(not 0 <= label < dataset.num_classes for label in classes):
            problem(
                ("dataset", "classes"),
                f"{dataset.name} has classes 0..{dataset.num_classes - 1}; got {classes}",
            )
    pool = spec.dataset.unlabeled
    registered = spec.dataset.name.startswith("ds_")
    # A registered dataset's pool is registered too: train_subset's leftovers stay unread.
    has_pool = pool is not None or (
        not registered
        and (spec.dataset.train_subset is not None or is_dataset_file(spec.dataset.name))
    )
    if pool is not None and not pool.startswith("ds_"):
        problem(("dataset", "unlabeled"), "name a registered dataset (ds_…) as the pool")
    if pool is not None and not (spec.regularizer.unlabeled or spec.kd.unlabeled):
        problem(
            ("dataset", "unlabeled"),
            "nothing reads the pool: set regularizer.unlabeled (or kd.unlabeled)",
        )
    for loc, asked in (
        (("regularizer", "unlabeled"), spec.regularizer.unlabeled),
        (("kd", "unlabeled"), spec.kd.unlabeled),
    ):
        if asked and not has_pool and registered:
            problem(
                loc,
                "a registered dataset's unlabeled inputs are a registered pool: "
                "name it in dataset.unlabeled",
            )
        elif asked and not has_pool:
            problem(
                loc,
                "unlabeled inputs are the training inputs left out by dataset.train_subset, "
                "an uploaded .npz's x_unlabeled, or a registered pool (dataset.unlabeled): "
                "set one",
            )
    if spec.regularizer.unlabeled and spec.regularizer.kind not in POOL_KINDS:
        problem(
            ("regularizer", "unlabeled"),
            f"only {', '.join(POOL_KINDS)} can use unlabeled inputs",
        )

    # Layer pairs name real stages.
    if spec.regularizer.kind in LAYER_KINDS:
        teacher_stages = _stages(spec.teacher.architecture) if spec.teacher else None
        student_stages = _stages(spec.student.architecture)
        for index, pair in enumerate(spec.regularizer.layers):
            if teacher_stages is not None and pair.teacher not in teacher_stages:
                problem(
                    ("regularizer", "layers", index, "teacher"),
                    _unknown("teacher stage", pair.teacher, teacher_stages),
                )
            if student_stages is not None and pair.student not in student_stages:
                problem(
                    ("regularizer", "layers", index, "student"),
                    _unknown("student stage", pair.student, student_stages),
                )
    return problems


def _stages(architecture: str | None) -> tuple[str, ...] | None:
    """The stage names of a zoo architecture (None when unknown, or for a graph, whose
    tensor names are checked against the file's)."""
    info = catalog().architectures.get(architecture) if architecture else None
    return info.stages if info else None


def is_graph_reference(checkpoint: str) -> bool:
    """Whether a teacher checkpoint may be an ONNX graph: an upload (its format is
    known once it is looked up) or an ``.onnx`` path."""
    return checkpoint.startswith("file_") or checkpoint.lower().endswith(".onnx")


def _unknown_architecture(name: str) -> str:
    """An unknown architecture's message: the nearest names of its source."""
    source, _, short = name.partition("/")
    names = catalog().libraries.get(source)
    if names is None:
        valid = (*catalog().architectures, "timm/<name>", "torchvision/<name>")
        return _unknown("architecture", name, valid)
    nearest = ", ".join(f"{source}/{n}" for n in nearest_first(short, list(names))[:10])
    listing = f"GET /v1/architectures?source={source}"
    return f"unknown architecture {name!r}; nearest: {nearest} ({listing})"


def _unknown(what: str, name: str, valid: tuple[str, ...]) -> str:
    return f"unknown {what} {name!r}; valid: {', '.join(valid)}"
