"""Frame sources, each captured in its own thread.

A source spec is one of:
  path/to/video.mp4          a video file (every frame, none dropped)
  path/to/folder/            a folder of images, in name order (none dropped)
  /dev/video0 or 0           a V4L2 camera
  rtsp:// http:// udp://     a network stream
  gst:PIPELINE               a GStreamer pipeline ending in appsink (needs OpenCV with GStreamer:
                             the Jetson system OpenCV, not pip's wheels)
  csi:N[:WxH@FPS]            a Jetson CSI camera (nvarguscamerasrc preset)

Live sources (cameras, streams) go through a bounded queue that drops the *oldest* frame
when inference falls behind, so results stay current; when a live source drops, the reader
reconnects with exponential backoff, capped (2 s by default) so that frames resume soon after
the camera does. Files and folders block instead: nothing is dropped.

RTSP goes over TCP unless told otherwise (`rtsp_transport="udp"` for cameras and servers that
only send UDP): OpenCV's FFmpeg back-end reads the transport from the environment variable
OPENCV_FFMPEG_CAPTURE_OPTIONS when a capture opens, so it is set there, for every stream of
the run, before the first open.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fogreid.data.image_io import IMAGE_SUFFIXES, read_image
from fogreid.errors import FogreidError

STREAM_TIMEOUT_MS = 5000
FOLDER_FPS = 25.0  # the clock of an image folder: one frame every 1/25 s
CSI_PIPELINE = ("nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={w}, height={h}, "
                "framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, "
                "format=BGR ! appsink drop=true max-buffers=2")


@dataclass
class Frame:
    source: str
    index: int          # frame number within the source
    time: float         # capture time (time.time())
    image: np.ndarray   # uint8 (H, W, 3) BGR
    clock: float = 0.0  # seconds on the source's clock: capture time for live sources, the position in a
                        # file (so recorded cameras started together share a clock, however fast they are read)


@dataclass(frozen=True)
class SourceSpec:
    name: str
    kind: str           # file | folder | device | stream | gstreamer
    target: str | int

    @property
    def live(self) -> bool:
        return self.kind in ("device", "stream", "gstreamer")


def refuse_repeated(sources: list[str]) -> None:
    """A source is named by what was typed: the same one twice would be one camera read by two
    readers (one tracker, one frame count), a wrong result with no error."""
    seen = set()
    for source in sources:
        if source in seen:
            raise FogreidError(f"--source {source} is given twice; give each camera once (to run one recording as "
                               f"two cameras, copy the file)")
        seen.add(source)


def parse_source(spec: str) -> SourceSpec:
    if spec.startswith("csi:"):
        parts = spec.split(":")
        sensor = int(parts[1]) if len(parts) > 1 and parts[1] else 0
        w, h, fps = 1920, 1080, 30
        if len(parts) > 2:
            try:
                size, _, rate = parts[2].partition("@")
                w, h = (int(x) for x in size.split("x"))
                fps = int(rate or fps)
            except ValueError:
                raise FogreidError(f"source {spec!r}: expected csi:N[:WIDTHxHEIGHT@FPS], "
                                   "e.g. csi:0:1280x720@30") from None
        return SourceSpec(spec, "gstreamer", CSI_PIPELINE.format(sensor=sensor, w=w, h=h, fps=fps))
    if spec.startswith("gst:"):
        return SourceSpec(spec, "gstreamer", spec[4:])
    if spec.split("://")[0] in ("rtsp", "rtsps", "http", "https", "udp", "tcp", "rtmp", "srt"):
        return SourceSpec(spec, "stream", spec)
    if spec.isdigit():
        return SourceSpec(spec, "device", int(spec))
    if spec.startswith("/dev/video"):
        return SourceSpec(spec, "device", spec)
    from fogreid import file_kinds

    path = Path(spec)
    kind = file_kinds.sniff(path)
    if kind == file_kinds.FOLDER:
        if not any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
            raise FogreidError(f"source {spec!r}: a folder with no images ({', '.join(IMAGE_SUFFIXES)}); give a "
                               f"video file or a folder of images")
        return SourceSpec(spec, "folder", str(path))
    if kind in (file_kinds.VIDEO, file_kinds.IMAGE, file_kinds.BINARY):
        return SourceSpec(spec, "file", str(path))
    if kind != file_kinds.MISSING:
        what = ("the file is empty (0 bytes), probably an interrupted copy" if kind == file_kinds.EMPTY
                else f"is {file_kinds.describe(kind)}, not a video")
        raise FogreidError(f"source {spec!r}: {what}; give a video file, a folder of images, a camera (/dev/videoN, "
                           f"N) or a stream URL")
    raise FogreidError(f"source {spec!r}: no such file or folder, and not a camera (/dev/videoN, N), a stream URL "
                       f"(rtsp://, http://, udp://), gst:PIPELINE or csi:N")


def set_rtsp_transport(transport: str) -> None:
    """How OpenCV's FFmpeg back-end opens rtsp:// streams (OPENCV_FFMPEG_CAPTURE_OPTIONS, key;value|...)."""
    if transport not in ("tcp", "udp"):
        raise FogreidError(f"--rtsp-transport {transport}: choose tcp or udp")
    options = [o for o in os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "").split("|")
               if o and not o.startswith("rtsp_transport;")]
    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = "|".join([f"rtsp_transport;{transport}", *options])


def _open_capture(spec: SourceSpec):
    import cv2

    if spec.kind == "gstreamer":
        if "GStreamer:                   YES" not in cv2.getBuildInformation():
            raise FogreidError(f"source {spec.name!r} needs OpenCV built with GStreamer (the Jetson system OpenCV); "
                               f"this OpenCV ({cv2.__file__}) has none. See the README's Jetson install.")
        return cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER)
    if spec.kind == "device":
        return cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
    if spec.kind == "stream":
        # Bounded waits: a stalled stream returns from read(), counts as lost and is reconnected.
        return cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, STREAM_TIMEOUT_MS,
                                                              cv2.CAP_PROP_READ_TIMEOUT_MSEC, STREAM_TIMEOUT_MS])
    return cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG)


class SourceReader(threading.Thread):
    """Reads one source into a queue. `frames()` yields them; None marks the end."""

    def __init__(self, spec: SourceSpec, queue_size: int = 4, reconnect: bool = True,
                 backoff: tuple[float, float] = (0.5, 2.0), max_retries: int | None = None,
                 stop: threading.Event | None = None, rtsp_transport: str = "tcp",
                 give_up_after: float | None = None) -> None:
        super().__init__(name=f"capture:{spec.name}", daemon=True)
        self.spec, self.queue_size, self.reconnect = spec, queue_size, reconnect and spec.live
        self.backoff, self.max_retries = backoff, max_retries
        self.give_up_after = give_up_after          # seconds without a frame before the source is given up
        self.stop_event = stop or threading.Event()
        self.buffer: collections.deque = collections.deque()
        self.ready = threading.Condition()
        self.dropped = 0
        self.reconnects = 0
        self.read = 0
        self.error: str | None = None
        self.finished = False
        self.rtsp_transport = rtsp_transport
        self.start_time: float | None = None        # time.time() when reading began
        self.last_frame_time: float | None = None   # time.time() of the last frame read
        self.last_failure: str | None = None        # why the last open or read failed, for the stall report
        self.stall_reported = False                  # set by whoever reported the current silence
        if spec.kind == "stream":
            set_rtsp_transport(rtsp_transport)

    # ------------------------------------------------------------------ producer side
    def run(self) -> None:
        self.start_time = time.time()
        try:
            if self.spec.kind == "folder":
                self._read_folder()
            else:
                self._read_capture()
        except FogreidError as exc:
            self.error = str(exc)
        finally:
            with self.ready:
                self.finished = True
                self.ready.notify_all()

    def _push(self, image: np.ndarray, position: float | None = None) -> None:
        now = time.time()
        frame = Frame(self.spec.name, self.read, now, image, now if self.spec.live or position is None else position)
        self.read += 1
        self.last_frame_time, self.stall_reported, self.last_failure = frame.time, False, None
        with self.ready:
            if self.spec.live:
                if len(self.buffer) >= self.queue_size:
                    self.buffer.popleft()  # inference is behind: the oldest frame is the least useful
                    self.dropped += 1
            else:
                while len(self.buffer) >= self.queue_size and not self.stop_event.is_set():
                    self.ready.wait(0.1)  # a file can wait: drop nothing
            self.buffer.append(frame)
            self.ready.notify_all()

    def _read_folder(self) -> None:
        files = sorted(p for p in Path(self.spec.target).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FogreidError(f"source {self.spec.name}: no images in the folder")
        for path in files:
            if self.stop_event.is_set():
                return
            self._push(read_image(path), self.read / FOLDER_FPS)

    def _read_capture(self) -> None:
        import cv2

        retries, delay = 0, self.backoff[0]
        while not self.stop_event.is_set():
            capture = _open_capture(self.spec)
            if capture.isOpened():
                expected = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if self.spec.kind == "file" else 0
                got_any = False
                while not self.stop_event.is_set():
                    ok, image = capture.read()
                    if not ok or image is None:
                        break
                    got_any = True
                    self._push(image, capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0 if not self.spec.live else None)
                capture.release()
                # A file cut mid-copy still opens (its index lists every frame) but stops early,
                # with only FFmpeg's "partial file" on stderr: say so, and fail the run.
                if expected and self.read < 0.98 * expected - 1 and not self.stop_event.is_set():
                    self.error = (f"source {self.spec.name}: the file ends after {self.read} of its {expected} "
                                  f"frames (truncated or damaged); re-copy it")
                if got_any:
                    retries, delay = 0, self.backoff[0]
                else:
                    self.last_failure = "opened, but no frame could be read"
            else:
                capture.release()
                self.last_failure = "cannot open it" + (f" over {self.rtsp_transport.upper()} (--rtsp-transport)"
                                                        if self.spec.target.__str__().startswith("rtsp") else "")
            if not self.reconnect or self.stop_event.is_set():
                if self.read == 0 and not self.stop_event.is_set():
                    raise FogreidError(f"source {self.spec.name}: cannot open or read it (missing codec, "
                                       f"unreachable, or not a video)")
                return
            retries += 1
            silent = time.time() - (self.last_frame_time or self.start_time or time.time())
            if self.give_up_after is not None and silent >= self.give_up_after:
                why = f" ({self.last_failure})" if self.last_failure else ""
                raise FogreidError(f"source {self.spec.name}: no frame for {silent:.0f} s{why}; gave up "
                                   f"(--give-up-after {self.give_up_after:g})")
            if self.max_retries is not None and retries > self.max_retries:
                raise FogreidError(f"source {self.spec.name}: lost, and {self.max_retries} reconnects failed")
            self.reconnects += 1
            self.stop_event.wait(delay)
            delay = min(delay * 2, self.backoff[1])

    # ------------------------------------------------------------------ consumer side
    def take(self, timeout: float = 0.05) -> Frame | None:
        """The next frame, or None if none arrived within `timeout` (0: do not wait)."""
        with self.ready:
            if not self.buffer and not self.finished and timeout > 0:
                self.ready.wait(timeout)
            if not self.buffer:
                return None
            frame = self.buffer.popleft()
            self.ready.notify_all()
            return frame

    def peek(self, timeout: float = 0.05) -> Frame | None:
        """The next frame without taking it, or None if none arrived within `timeout`."""
        with self.ready:
            if not self.buffer and not self.finished and timeout > 0:
                self.ready.wait(timeout)
            return self.buffer[0] if self.buffer else None

    @property
    def exhausted(self) -> bool:
        with self.ready:
            return self.finished and not self.buffer
