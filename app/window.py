"""The main window. It only draws and forwards clicks: all logic is in `app.viewmodels`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QAction, QColor, QIcon, QImage, QKeySequence, QPainter, QPixmap, QShortcut
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.viewmodels import (
    EXPRESSIONS,
    IMAGE_SUFFIXES,
    LABELS,
    LOADING,
    SHORTCUTS,
    GalleryModel,
    SessionViewModel,
)
from engine import paths

log = logging.getLogger(__name__)

CAMERA_SIZES = ((640, 480), (1280, 720), (1920, 1080))


def to_qimage(rgb: np.ndarray) -> QImage:
    h, w, _ = rgb.shape
    return QImage(np.ascontiguousarray(rgb).data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()


class Preview(QLabel):
    """The live picture, scaled to fit, with an optional fps/latency overlay."""

    def __init__(self) -> None:
        super().__init__()
        self.setMinimumSize(360, 360)
        self.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setStyleSheet("background:#111; color:#bbb; font-size:16px")
        self.setText("Press Start, then talk")
        self.overlay = True
        self.frame_index = -1
        self.image: QImage | None = None

    def show_frame(self, rgb: np.ndarray, index: int, text: str) -> None:
        self.frame_index = index
        self.image = to_qimage(rgb)
        pix = QPixmap.fromImage(self.image).scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                                   Qt.TransformationMode.SmoothTransformation)
        if self.overlay and text:
            p = QPainter(pix)
            p.fillRect(8, 8, 10 + 8 * len(text), 26, QColor(0, 0, 0, 150))
            p.setPen(QColor("#7CFC00"))
            p.drawText(14, 26, text)
            p.end()
        self.setPixmap(pix)


class MainWindow(QMainWindow):
    def __init__(self, session: SessionViewModel, gallery: GalleryModel) -> None:
        super().__init__()
        self.vm, self.gallery = session, gallery
        self.settings = session.settings
        self._error_box: QMessageBox | None = None
        self._pending_errors: list[str] = []
        self._last_stats: dict = {}
        self.setWindowTitle("talkcam")
        self.setAcceptDrops(True)
        self._build()
        self._menus()
        self._connect()
        self.refresh_gallery()
        self.refresh_mics()
        self._frame_timer = QTimer(self, interval=33)
        self._frame_timer.timeout.connect(self._pull_frame)
        self._frame_timer.start()
        self._stats_timer = QTimer(self, interval=500)
        self._stats_timer.timeout.connect(self._update_status)
        self._stats_timer.start()

    # -- layout ---------------------------------------------------------------------------------
    def _build(self) -> None:
        self.preview = Preview()
        self.preview.overlay = self.settings.overlay
        self.start_btn = QPushButton("Start")
        self.start_btn.setShortcut(QKeySequence("Space"))
        self.record_btn = QPushButton("● Record")
        self.record_btn.setCheckable(True)
        self.record_btn.setEnabled(False)
        self.record_time = QLabel("")
        self.mute_box = QCheckBox("Mute")
        self.mute_box.setChecked(self.settings.muted)
        self.cam_box = QCheckBox("Virtual webcam")
        self.cam_box.setChecked(self.settings.virtualcam)
        self.vmc_box = QCheckBox("VTuber (VMC)")
        self.vmc_box.setChecked(self.settings.vmc)
        self.vmc_box.setToolTip("Send the motion (ARKit blendshapes, head pose, gaze) to VSeeFace, VNyan, Warudo "
                                "or VTube Studio over the VMC protocol")
        self.synced_box = QCheckBox("Synced mic")
        self.synced_box.setChecked(self.settings.synced_mic)
        self.synced_box.setToolTip("Publish your voice as a virtual microphone ('talkcam Microphone'; VB-CABLE on "
                                   "Windows, BlackHole on macOS) delayed to match the avatar, for calls")
        bar = QHBoxLayout()
        for w in (self.start_btn, self.record_btn, self.record_time, self.mute_box, self.cam_box, self.synced_box,
                  self.vmc_box):
            bar.addWidget(w)
        bar.addStretch(1)
        left = QVBoxLayout()
        left.addWidget(self.preview, 1)
        left.addLayout(bar)

        # portraits
        self.portraits = QListWidget()
        self.portraits.setViewMode(QListWidget.ViewMode.IconMode)
        self.portraits.setIconSize(QSize(96, 96))
        self.portraits.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.portraits.setMinimumHeight(230)
        self.add_btn = QPushButton("Add portrait…")
        pbox = QGroupBox("Portrait (drop images here)")
        pl = QVBoxLayout(pbox)
        pl.addWidget(self.portraits)
        pl.addWidget(self.add_btn)

        # microphone
        self.mic_combo = QComboBox()
        self.level = QProgressBar()
        self.level.setRange(-60, 0)
        self.level.setFormat("%v dB")
        self.level.setValue(-60)
        self.mic_refresh = QPushButton("↻")
        self.mic_refresh.setToolTip("Look for newly plugged-in microphones")
        self.mic_refresh.setMaximumWidth(36)
        mrow = QHBoxLayout()
        mrow.addWidget(self.mic_combo, 1)
        mrow.addWidget(self.mic_refresh)
        mbox = QGroupBox("Microphone")
        ml = QVBoxLayout(mbox)
        ml.addLayout(mrow)
        ml.addWidget(self.level)

        # virtual camera
        self.cam_size = QComboBox()
        for cam_w, cam_h in CAMERA_SIZES:
            self.cam_size.addItem(f"{cam_w} × {cam_h}", (cam_w, cam_h))
        i = self.cam_size.findData((self.settings.cam_width, self.settings.cam_height))
        self.cam_size.setCurrentIndex(max(0, i))
        self.cam_fps = QSpinBox()
        self.cam_fps.setRange(10, 60)
        self.cam_fps.setValue(self.settings.cam_fps)
        cbox = QGroupBox("Virtual webcam")
        cl = QFormLayout(cbox)
        cl.addRow("Resolution", self.cam_size)
        cl.addRow("Frames/s", self.cam_fps)
        self.vmc_target = QLineEdit(self.settings.vmc_target)
        self.vmc_target.setToolTip("HOST:PORT of the VTuber app (VSeeFace, VNyan, Warudo listen on 39539)")
        cl.addRow("VMC to", self.vmc_target)

        # controls
        self.guidance = QSlider(Qt.Orientation.Horizontal)
        self.guidance.setRange(10, 50)
        self.guidance.setValue(int(round(self.settings.guidance * 10)))
        self.guidance_label = QLabel(f"{self.settings.guidance:.1f}")
        from engine.runtime.config import Latency

        self.latency = QComboBox()
        for mode, label in ((Latency.STANDARD, "Standard"), (Latency.LOW, "Low (less delay)")):
            self.latency.addItem(label, mode.value)
        self.latency.setCurrentIndex(max(0, self.latency.findData(self.settings.latency)))
        self.latency.setToolTip("How long the avatar waits for your voice before it moves (docs/latency.md); "
                                "applies at the next Start")
        self.style_edit = QLineEdit(self.settings.style)
        self.style_edit.setPlaceholderText('"speaking calmly", "singing", "excited"…')
        gl = QHBoxLayout()
        gl.addWidget(self.guidance, 1)
        gl.addWidget(self.guidance_label)
        expr = QHBoxLayout()
        self.expr_buttons = {}
        for name in EXPRESSIONS:
            b = QPushButton(LABELS[name])
            b.setToolTip(f"Shortcut: {SHORTCUTS[name]}")
            self.expr_buttons[name] = b
            expr.addWidget(b)
        xbox = QGroupBox("Controls")
        xl = QFormLayout(xbox)
        xl.addRow("Lip-sync strength", gl)
        xl.addRow("Expression", expr)
        xl.addRow("Style", self.style_edit)
        xl.addRow("Latency", self.latency)

        right = QVBoxLayout()
        for group in (pbox, mbox, cbox, xbox):
            right.addWidget(group)
        right.addStretch(1)
        root = QWidget()
        h = QHBoxLayout(root)
        h.addLayout(left, 3)
        rw = QWidget()
        rw.setLayout(right)
        rw.setMaximumWidth(460)
        h.addWidget(rw, 2)
        self.setCentralWidget(root)
        self.status_device = QLabel("")
        self.status_perf = QLabel("")
        self.statusBar().addWidget(self.status_device, 1)
        self.statusBar().addPermanentWidget(self.status_perf)
        self.resize(1180, 720)

    def _menus(self) -> None:
        file = self.menuBar().addMenu("&File")
        add = QAction("Add portrait…", self, shortcut=QKeySequence("Ctrl+O"))
        add.triggered.connect(self._add_dialog)
        folder = QAction("Recordings folder…", self)
        folder.triggered.connect(self._choose_record_dir)
        quit_ = QAction("Quit", self, shortcut=QKeySequence("Ctrl+Q"))
        quit_.triggered.connect(self.close)
        for a in (add, folder, quit_):
            file.addAction(a)
        view = self.menuBar().addMenu("&View")
        self.overlay_action = QAction("Show fps / latency", self, checkable=True, checked=self.settings.overlay,
                                      shortcut=QKeySequence("F2"))
        self.overlay_action.toggled.connect(self._toggle_overlay)
        view.addAction(self.overlay_action)
        help_ = self.menuBar().addMenu("&Help")
        logs = QAction("Show logs", self)
        logs.triggered.connect(self.show_logs)
        help_.addAction(logs)
        about = QAction("About talkcam", self)
        about.triggered.connect(lambda: QMessageBox.about(
            self, "talkcam", "talkcam: a live talking avatar from one portrait.\n"
                             "Models and portraits: see assets/."))
        help_.addAction(about)

    def _connect(self) -> None:
        vm = self.vm
        self.start_btn.clicked.connect(lambda: vm.stop() if vm.state == "running" else vm.start())
        self.record_btn.toggled.connect(vm.set_recording)
        self.mute_box.toggled.connect(vm.set_mute)
        self.cam_box.toggled.connect(vm.set_virtualcam)
        self.vmc_box.toggled.connect(lambda on: vm.set_vmc(on, self.vmc_target.text().strip()))
        self.synced_box.toggled.connect(vm.set_synced_mic)
        self.vmc_target.editingFinished.connect(lambda: setattr(self.settings, "vmc_target",
                                                                self.vmc_target.text().strip()))
        self.add_btn.clicked.connect(self._add_dialog)
        self.portraits.itemActivated.connect(self._pick)
        self.portraits.itemClicked.connect(self._pick)
        self.mic_refresh.clicked.connect(self.refresh_mics)
        self.mic_combo.activated.connect(lambda i: setattr(self.settings, "mic", self.mic_combo.itemData(i) or ""))
        self.cam_size.activated.connect(self._cam_size)
        self.cam_fps.valueChanged.connect(lambda v: setattr(self.settings, "cam_fps", v))
        self.guidance.valueChanged.connect(self._guidance)
        self.style_edit.editingFinished.connect(lambda: vm.set_style(self.style_edit.text()))
        self.latency.activated.connect(lambda i: vm.set_latency(self.latency.itemData(i)))
        for name, b in self.expr_buttons.items():
            b.clicked.connect(lambda _=False, n=name: vm.expression(n))
            shortcut = QShortcut(QKeySequence(SHORTCUTS[name]), self)
            shortcut.activated.connect(lambda n=name: vm.expression(n))
        vm.stateChanged.connect(self._state)
        vm.error.connect(self.show_error)
        vm.message.connect(lambda m: self.statusBar().showMessage(m, 8000))
        vm.loading.connect(self._loading)
        vm.recordingChanged.connect(self._recording)
        vm.virtualcamChanged.connect(self._virtualcam)
        vm.vmcChanged.connect(self._vmc)
        vm.syncedMicChanged.connect(self._synced)
        vm.portraitChanged.connect(lambda _: self.refresh_gallery())
        self.gallery.changed.connect(self.refresh_gallery)

    # -- gallery --------------------------------------------------------------------------------
    def refresh_gallery(self) -> None:
        current = self.settings.portrait or str(paths.default_portrait())
        self.portraits.clear()
        for item in self.gallery.items:
            pix = QPixmap(str(item.path))
            if pix.isNull():
                pix = QPixmap(96, 96)
                pix.fill(QColor("#444"))
            pix = pix.scaled(96, 96, Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation)
            if item.status == "bad":
                p = QPainter(pix)
                p.fillRect(0, pix.height() - 22, pix.width(), 22, QColor(160, 0, 0, 200))
                p.setPen(QColor("white"))
                p.drawText(4, pix.height() - 6, "no usable face")
                p.end()
            label = item.path.stem + ("" if item.status != "checking" else " …")
            w = QListWidgetItem(QIcon(pix), label)
            w.setData(Qt.ItemDataRole.UserRole, str(item.path))
            w.setToolTip(f"{item.path}\n" + ({"ok": "Face found. " + item.reason, "bad": item.reason,
                                              "checking": "Checking…"}[item.status]))
            self.portraits.addItem(w)
            if str(item.path) == current:
                w.setSelected(True)

    def _pick(self, w: QListWidgetItem) -> None:
        path = Path(w.data(Qt.ItemDataRole.UserRole))
        item = self.gallery.item(path)
        if item is not None and item.status == "bad":
            self.show_error(f"{path.name} cannot be used: {item.reason}")
            return
        self.vm.select_portrait(path)

    def _add_dialog(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(self, "Add portraits", str(Path.home()),
                                                "Images (" + " ".join(f"*{s}" for s in IMAGE_SUFFIXES) + ")")
        for f in files:
            self.add_portrait(Path(f))

    def add_portrait(self, path: Path) -> None:
        try:
            self.gallery.add(path)
        except (OSError, ValueError) as exc:
            self.show_error(str(exc))

    def dragEnterEvent(self, e) -> None:  # noqa: N802 (Qt API)
        if e.mimeData().hasUrls():
            e.acceptProposedAction()

    def dropEvent(self, e) -> None:  # noqa: N802 (Qt API)
        for url in e.mimeData().urls():
            if url.isLocalFile():
                self.add_portrait(Path(url.toLocalFile()))

    # -- microphone -----------------------------------------------------------------------------
    def refresh_mics(self) -> None:
        """The device list (on start-up and whenever the stream is stopped: hot-plugged devices appear)."""
        self.mic_combo.clear()
        self.mic_combo.addItem("System default", "")
        names, problem = self.vm.microphones()
        for name in names:
            self.mic_combo.addItem(name, name)
        if problem:
            self.statusBar().showMessage(problem, 10000)
        i = self.mic_combo.findData(self.settings.mic)
        self.mic_combo.setCurrentIndex(max(0, i))

    # -- reactions ------------------------------------------------------------------------------
    def _loading(self, on: bool) -> None:
        """The loading note stays until the models are in (the first start can take a minute)."""
        if on:
            self.statusBar().showMessage(LOADING)
        elif self.statusBar().currentMessage() == LOADING:
            self.statusBar().clearMessage()

    def _state(self, state: str) -> None:
        running = state == "running"
        self.start_btn.setText({"running": "Stop", "starting": "Starting…", "stopping": "Stopping…"}.get(state, "Start"))
        self.start_btn.setEnabled(state in ("running", "stopped"))
        self.record_btn.setEnabled(running)
        self.mic_combo.setEnabled(state == "stopped")
        self.mic_refresh.setEnabled(state == "stopped")
        if state == "stopped":
            self.refresh_mics()
            self.level.setValue(-60)

    def _recording(self, on: bool, path: str) -> None:
        self.record_btn.blockSignals(True)
        self.record_btn.setChecked(on)
        self.record_btn.blockSignals(False)
        self.record_btn.setText("■ Stop recording" if on else "● Record")
        if not on:
            self.record_time.setText("")

    def _virtualcam(self, on: bool) -> None:
        self.cam_box.blockSignals(True)
        self.cam_box.setChecked(on)
        self.cam_box.blockSignals(False)

    def _vmc(self, on: bool) -> None:
        self.vmc_box.blockSignals(True)
        self.vmc_box.setChecked(on)
        self.vmc_box.blockSignals(False)

    def _synced(self, on: bool) -> None:
        self.synced_box.blockSignals(True)
        self.synced_box.setChecked(on)
        self.synced_box.blockSignals(False)

    def _cam_size(self, i: int) -> None:
        w, h = self.cam_size.itemData(i)
        self.settings.cam_width, self.settings.cam_height = w, h

    def _guidance(self, v: int) -> None:
        self.guidance_label.setText(f"{v / 10:.1f}")
        self.vm.set_guidance(v / 10)

    def _toggle_overlay(self, on: bool) -> None:
        self.settings.overlay = on
        self.preview.overlay = on

    def _choose_record_dir(self) -> None:
        d = QFileDialog.getExistingDirectory(self, "Save recordings in", str(self.settings.record_dir))
        if d:
            self.settings.record_dir = Path(d)

    def _pull_frame(self) -> None:
        f = self.vm.latest_frame()
        if f is not None and f.index != self.preview.frame_index:
            s = self._last_stats
            text = f"{s.get('fps', 0):.0f} fps  {s.get('latency_ms_p50', 0):.0f} ms" if s else ""
            self.preview.show_frame(f.image, f.index, text)
        if self.vm.recorder is not None:
            t = int(self.vm.record_elapsed())
            self.record_time.setText(f"REC {t // 60:02d}:{t % 60:02d}")

    def _update_status(self) -> None:
        self.vm.poll()
        if self.vm.state != "running":
            self.status_perf.setText("")
            return
        s = self._last_stats = self.vm.stats()
        self.level.setValue(int(max(-60, self.vm.level.level_db)))
        mic = s.get("device") or "microphone"
        if s.get("mic_state") == "lost":
            mic += " (lost: running on silence)"
        self.status_device.setText(f"{mic} · {s.get('backend', '')}")
        self.status_perf.setText(f"{s['fps']:.1f} fps · latency {s['latency_ms_p50']:.0f} / "
                                 f"{s['latency_ms_p95']:.0f} ms · dropped {s['dropped_frames']}"
                                 + (f" · {s['av']}" if s.get("av") else ""))

    # -- errors and logs ------------------------------------------------------------------------
    def show_error(self, message: str) -> None:
        """One error dialog at a time; errors arriving meanwhile are shown after it closes."""
        if self._error_box is not None:
            self._pending_errors.append(message)
            return
        box = QMessageBox(QMessageBox.Icon.Warning, "talkcam", message, QMessageBox.StandardButton.Ok, self)
        box.finished.connect(self._error_closed)
        self._error_box = box
        box.open()

    def _error_closed(self) -> None:
        self._error_box = None
        if self._pending_errors:
            self.show_error(self._pending_errors.pop(0))

    def show_logs(self) -> None:
        f = paths.log_dir() / "talkcam.log"
        text = f.read_text(errors="replace")[-200_000:] if f.exists() else f"No log yet ({f})."
        d = QDialog(self)
        d.setWindowTitle(f"Logs: {f}")
        edit = QPlainTextEdit(text)
        edit.setReadOnly(True)
        QVBoxLayout(d).addWidget(edit)
        d.resize(900, 600)
        edit.moveCursor(edit.textCursor().MoveOperation.End)
        d.show()

    def closeEvent(self, e) -> None:  # noqa: N802 (Qt API)
        self.vm.close()
        self.gallery.close()
        super().closeEvent(e)
