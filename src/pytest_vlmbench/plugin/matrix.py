"""The matrix a session runs: catalog models x precisions, on the device, with skips.

Reading the catalog, resolving the device and refusing a matrix that is a mistake (a
precision typo, a selection that runs nothing) happen here, before any model loads.
A session that collects no benchmark never detects the device nor imports a backend:
both happen on first use, and the backend registry is imported inside the methods that
ask it (pytest imports this module at start-up, through the session).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_vlmbench.models import devices
from pytest_vlmbench.models.catalog import (
    EMBEDDED_CATALOG,
    Catalog,
    CatalogError,
    did_you_mean,
    load_catalog,
)
from pytest_vlmbench.models.devices import CPU_FALLBACK, Detection, DeviceProfile

if TYPE_CHECKING:
    from pytest_vlmbench.plugin.options import Options
    from pytest_vlmbench.run.runner import ModelCase


@dataclass
class MatrixCell:
    case: ModelCase
    skip: str | None  # why this combination cannot run here, or None


class Matrix:
    """The catalog, the device and the backends' fitness for it, for one session."""

    def __init__(self, options: Options, resolved: tuple[DeviceProfile, Detection] | None,
                 log_path: Path | None) -> None:
        self.options = options
        self._resolved = resolved
        self.log_path = log_path  # native output of a backend's device check goes here
        self._catalog: Catalog | None = None
        self._device_problems: dict[tuple[str, str], str | None] = {}
        self.fallbacks: dict[str, str] = {}  # backend -> why --vlm-cpu-fallback moved it

    # -- the device (detected lazily: a session that runs no benchmark never looks) --
    def _device(self) -> tuple[DeviceProfile, Detection]:
        if self._resolved is None:
            self._resolved = devices.resolve(self.options.device)
        return self._resolved

    @property
    def device(self) -> DeviceProfile:
        return self._device()[0]

    @property
    def detection(self) -> Detection:
        return self._device()[1]

    def device_problem(self, backend: str, device: DeviceProfile | None = None) -> str | None:
        """Why `backend`, as installed, cannot use `device`'s accelerator (the session's
        device by default); None when it can, when the device has none, or when the
        backend cannot even be imported (its load then says why). Asked once per backend;
        importing the backend happens here, so only for a device with an accelerator."""
        device = device or self.device
        if device.accelerator == "cpu":
            return None
        key = (backend, device.name)
        if key not in self._device_problems:
            from pytest_vlmbench import backends
            from pytest_vlmbench.backends.native_log import native_stderr_to

            try:
                instance = backends.get_backend(backend)
            except backends.BackendError:
                return None
            with native_stderr_to(self.log_path, f"device check {backend} on {device.name}"):
                try:
                    problem = backends.device_problem(instance, device)
                except Exception as exc:  # a broken check is a load failure, said once
                    problem = (f"backend {backend!r} could not check whether it can use "
                               f"device {device.name}: {type(exc).__name__}: {exc}")
            self._device_problems[key] = problem
        return self._device_problems[key]

    def device_for(self, backend: str) -> DeviceProfile:
        """The profile `backend`'s models run on: the session's device, or, with
        --vlm-cpu-fallback, the CPU fallback when the backend cannot use its GPU."""
        if not self.options.cpu_fallback:
            return self.device
        problem = self.device_problem(backend)
        if problem is None:
            return self.device
        self.fallbacks[backend] = problem
        return devices.cpu_fallback(self.device)

    def profile_for(self, case: ModelCase) -> DeviceProfile:
        """The profile a matrix cell was labelled with."""
        if case.device == devices.REMOTE:
            return devices.remote_profile()
        return devices.cpu_fallback(self.device) if case.device == CPU_FALLBACK else self.device

    # -- the catalog and the cells -------------------------------------------------
    def catalog(self) -> Catalog:
        if self._catalog is None:
            from pytest_vlmbench.backends import available  # names only: no backend

            self._catalog = load_catalog(self.options.catalog, backends=frozenset(available()))
        return self._catalog

    def chosen(self) -> bool:
        """Whether anything in the matrix was chosen here: a catalog other than the
        package's, --vlm-models or --vlm-precisions. When nothing was, `check_matrix`
        cannot fail (the package's catalog is valid and has default models: tested in
        test_embedded_defaults), so a plain session skips it and reads no catalog."""
        o = self.options
        return o.catalog != EMBEDDED_CATALOG or bool(o.models) or bool(o.precisions)

    def check_matrix(self) -> None:
        """Refuse a matrix that names a precision no device knows, or that runs nothing.

        Both are mistakes, not results: a typo (`q4_kk`, `--vlm-precisions=fp64`) would
        otherwise skip every cell it touches and exit 0 with nothing benchmarked.
        CatalogError (a usage error) with one line naming the entry or the option. The
        device is not looked at here (a plain test session never detects it); the
        "selects nothing" half is `check_runs_something`, once benchmarks are collected.
        """
        self.catalog()  # validated on load, its precision names included (catalog.py)
        known = devices.known_precisions()
        for precision in self.options.precisions or ():
            if precision not in known:
                raise CatalogError(
                    f"--vlm-precisions: {precision!r} is not a precision any device profile "
                    f"knows{did_you_mean(precision, known)}"
                )
        self.matrix(check_backends=False, with_device=False)  # model ids, defaults

    def check_runs_something(self) -> None:
        """With benchmarks collected: refuse a matrix in which every cell is skipped."""
        cells = self.matrix(check_backends=False)
        if cells and all(cell.skip is not None for cell in cells):
            reasons = "; ".join(dict.fromkeys(str(cell.skip) for cell in cells))
            raise CatalogError(f"the model matrix selects nothing to run here: {reasons}")

    def matrix(self, *, check_backends: bool = True, with_device: bool = True,
               models: list[str] | None = None) -> list[MatrixCell]:
        """The (model, precision) cells for this device; CatalogError if it cannot be built.

        With --vlm-cpu-fallback a cell whose backend cannot use the device's GPU is
        labelled cpu-fallback (its test id too); that asks the backend, so imports it:
        `check_backends=False` (validating the catalog) leaves that out;
        `with_device=False` only checks the model ids and returns no cells. `models`: a
        test's own models (the `vlm_models` marker), used unless --vlm-models chose.
        """
        catalog = self.catalog()
        ids = self.options.models or models or catalog.defaults()
        if not ids:
            raise CatalogError(
                f"{catalog.path}: no model has default = true; choose with --vlm-models"
            )
        specs = []
        for model_id in ids:
            try:
                specs.append((model_id, catalog.get(model_id)))
            except CatalogError as exc:
                where = "--vlm-models" if self.options.models or not models \
                    else "@pytest.mark.vlm_models"
                raise CatalogError(f"{where}: {exc}") from None
        if not with_device:
            return []
        from pytest_vlmbench.run.runner import ModelCase  # with benchmarks only

        cells = []
        for model_id, spec in specs:
            # A model behind an external endpoint runs on the server's hardware, not this
            # machine's: labelled `remote`, every precision allowed (the server decides).
            remote = spec.endpoint is not None and spec.endpoint.base_url is not None
            for precision in self.options.precisions or spec.run_precisions():
                device = devices.remote_profile() if remote \
                    else self.device_for(spec.backend) if check_backends else self.device
                case = ModelCase(model_id, precision, device.name, spec.backend, spec.modality)
                skip = None
                if precision not in spec.precisions:
                    skip = (
                        f"{model_id} has no {precision} variant in {catalog.path.name} "
                        f"(it has {', '.join(spec.precisions)})"
                    )
                elif not device.supports(precision):
                    skip = f"device {device.name} does not support {precision}"
                cells.append(MatrixCell(case, skip))
        return cells
