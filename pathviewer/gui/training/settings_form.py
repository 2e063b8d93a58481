"""A validated settings form built from a config dataclass and its field metadata.

Each field of the dataclass becomes one row: a check box for ``bool``, a combo box when the
metadata has ``choices`` (editable when it also has ``other``, the form of other values), a spin
box (range from ``min``/``max``) for ``int``, a line edit with range checking for ``float``
(learning rates span many decades, which spin boxes handle badly) and a line edit for ``str``.
The metadata's ``help`` becomes the tooltip.  After every edit the form builds the config and
runs its ``validate()``; :attr:`SettingsForm.validityChanged` tells the owner whether to enable
its Start button and what is wrong.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QWidget,
)

from pathviewer.core.errors import PathViewerError

INT_LIMIT = 2**31 - 1  # QSpinBox holds a C int


def _label(name: str) -> str:
    return name.replace("_", " ")


def _fmt(value: float) -> str:
    return f"{value:g}"


class SettingsForm(QWidget):
    """Form for the fields of a config dataclass.

    Parameters
    ----------
    config
        An instance of the dataclass: its class gives the fields, its values the initial state.
    exclude
        Field names not shown (their values are kept from ``config``).

    Signals
    -------
    validityChanged(bool, str)
        After every edit: whether the values are valid, and the first problem when not.
    """

    validityChanged = Signal(bool, str)

    def __init__(
        self, config: Any, exclude: Iterable[str] = (), parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        if not dataclasses.is_dataclass(config) or isinstance(config, type):
            raise TypeError("SettingsForm needs a dataclass instance")
        self._base = config
        self._cls = type(config)
        self._exclude = set(exclude)
        self.widgets: dict[str, QWidget] = {}
        self._fields = [f for f in dataclasses.fields(config) if f.name not in self._exclude]
        layout = QFormLayout(self)
        layout.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        layout.setContentsMargins(4, 4, 4, 4)
        labels: dict[str, str] = getattr(self._cls, "LABELS", {})
        self._labels = {f.name: labels.get(f.name, _label(f.name)) for f in self._fields}
        for f in self._fields:
            widget = self._make_widget(f, getattr(config, f.name))
            help_text = str(f.metadata.get("help", ""))
            # The field's own name is what the command line and config.json call it.
            widget.setToolTip(f"{help_text} ({f.name})" if help_text else f.name)
            widget.setObjectName(f"setting-{f.name}")
            self.widgets[f.name] = widget
            layout.addRow(self._labels[f.name], widget)
        self._valid = True
        self._message = ""
        self.revalidate()

    # -- building ----------------------------------------------------------------------------

    def _make_widget(self, f: dataclasses.Field[Any], value: Any) -> QWidget:
        meta = f.metadata
        if isinstance(value, bool):
            box = QCheckBox()
            box.setChecked(value)
            box.toggled.connect(self.revalidate)
            return box
        if "choices" in meta:
            combo = QComboBox()
            if "other" in meta:
                # Values beyond the list (a timm:NAME encoder) are typed in; validate() checks.
                combo.setEditable(True)
                combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
                line = combo.lineEdit()
                if line is not None:
                    line.setPlaceholderText(str(meta["other"]))
            combo.addItems([str(c) for c in meta["choices"]])
            if str(value) not in [str(c) for c in meta["choices"]]:
                combo.addItem(str(value))
            combo.setCurrentText(str(value))
            combo.currentTextChanged.connect(self.revalidate)
            return combo
        if isinstance(value, int):
            spin = QSpinBox()
            low = int(meta.get("min", -INT_LIMIT))
            high = int(min(meta.get("max", INT_LIMIT), INT_LIMIT))
            spin.setRange(max(low, -INT_LIMIT), high)
            spin.setValue(int(value))
            spin.setKeyboardTracking(True)
            spin.valueChanged.connect(self.revalidate)
            return spin
        edit = QLineEdit(_fmt(value) if isinstance(value, float) else str(value))
        if isinstance(value, float):
            minimum, maximum = meta.get("min"), meta.get("max")
            edit.setPlaceholderText(
                f"{_fmt(minimum) if minimum is not None else '-inf'} .. "
                f"{_fmt(maximum) if maximum is not None else 'inf'}"
            )
        edit.textChanged.connect(self.revalidate)
        return edit

    # -- reading and writing -----------------------------------------------------------------

    def _read(self, f: dataclasses.Field[Any]) -> Any:
        """The field's value from its widget; raises ValueError naming the field."""
        widget = self.widgets[f.name]
        default = getattr(self._base, f.name)
        if isinstance(widget, QCheckBox):
            return widget.isChecked()
        if isinstance(widget, QComboBox):
            return widget.currentText().strip()
        if isinstance(widget, QSpinBox):
            return widget.value()
        assert isinstance(widget, QLineEdit)
        text = widget.text().strip()
        if not isinstance(default, float):
            return text
        name = f"{self._labels[f.name]} ({f.name})"
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{name}: {text!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{name}: must be a finite number")
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if low is not None and number < low:
            raise ValueError(f"{name}: {_fmt(number)} is below the minimum {_fmt(low)}")
        if high is not None and number > high:
            raise ValueError(f"{name}: {_fmt(number)} is above the maximum {_fmt(high)}")
        return number

    def value(self) -> Any:
        """The config built from the form (raises ValueError or the config's validation error)."""
        values = {f.name: self._read(f) for f in self._fields}
        config = dataclasses.replace(self._base, **values)
        validate = getattr(config, "validate", None)
        if callable(validate):
            validate()
        return config

    def set_value(self, config: Any) -> None:
        """Show the values of ``config`` (same dataclass)."""
        self._base = config
        for f in self._fields:
            widget = self.widgets[f.name]
            value = getattr(config, f.name)
            widget.blockSignals(True)
            if isinstance(widget, QCheckBox):
                widget.setChecked(bool(value))
            elif isinstance(widget, QComboBox):
                if widget.findText(str(value)) < 0:
                    widget.addItem(str(value))
                widget.setCurrentText(str(value))
            elif isinstance(widget, QSpinBox):
                widget.setValue(int(value))
            elif isinstance(widget, QLineEdit):
                widget.setText(_fmt(value) if isinstance(value, float) else str(value))
            widget.blockSignals(False)
        self.revalidate()

    # -- validation --------------------------------------------------------------------------

    def revalidate(self, *_args: object) -> bool:
        """Check every field, mark the bad one and emit :attr:`validityChanged`."""
        message = ""
        bad: str | None = None
        for f in self._fields:
            try:
                self._read(f)
            except ValueError as error:
                message, bad = str(error), f.name
                break
        if not message:
            try:
                self.value()
            except (ValueError, TypeError, PathViewerError) as error:
                message = str(error)
                bad = next((f.name for f in self._fields if f.name in message), None)
        for name, widget in self.widgets.items():
            widget.setStyleSheet("border: 1px solid #d9534f;" if name == bad else "")
        self._valid, self._message = not message, message
        self.validityChanged.emit(self._valid, message)
        return self._valid

    @property
    def is_valid(self) -> bool:
        """Whether the values form a valid config."""
        return self._valid

    @property
    def message(self) -> str:
        """The first problem ('' when valid)."""
        return self._message
