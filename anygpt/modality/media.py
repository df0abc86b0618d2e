"""Media I/O for the modality tokenizers: images via Pillow, audio via soundfile + torchaudio.

The one home for media I/O: every reader, writer, resampler and filterbank the package uses is
here. Every loader raises :class:`MediaError` with ``"<path>: <reason>"`` on unreadable or
invalid input, so batch jobs can record the reason and go on. This module sits below the
tokenizer protocol (:mod:`anygpt.modality.base` imports it, never the reverse).

- Images: any Pillow mode → RGB (transparency composited on white), an explicit resize policy
  (``"resize"``: squash to ``size×size`` without cropping, as the reference does; ``"center-crop"``:
  scale the short side to ``size`` and crop the middle), and a decompression-bomb guard
  (``max_pixels``).
- Audio: wav / flac / ogg / mp3 through soundfile (no ffmpeg needed), mono downmix by averaging
  channels, resampling with ``torchaudio.functional.resample`` at bounded cost (source rates
  1–768 kHz; see :func:`resample_ratio`), a duration limit, and rejection of
  empty, zero-channel, NaN or Inf audio. Waveforms are float32 1-D numpy arrays.
- Writers: :func:`save_image` (format from the suffix, PNG by default) and :func:`save_audio`
  (16-bit PCM wav), both atomic.
- Spectral: :func:`mel_filterbank` (torchaudio's triangular filters).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from anygpt.utils import atomic_path

RESIZE_POLICIES = ("resize", "center-crop")
DEFAULT_MAX_PIXELS = 64_000_000  # about 8000×8000: larger files are refused before decoding


class MediaError(ValueError):
    """Unreadable or invalid media; the message names the file and the reason."""


def _check_regular(path: Path) -> None:
    """Refuse what is not a regular file before opening it: reading a FIFO or a device blocks
    or never ends."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaError(f"{path}: file not found") from None
    except OSError as e:
        raise MediaError(f"{path}: cannot be read ({e.strerror})") from None
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise MediaError(f"{path}: not a regular file (a folder, FIFO or device); give a media file")


def open_image(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Open and decode an image file as it is (any Pillow mode), refusing non-regular files and
    images over ``max_pixels`` before decoding them (the decompression-bomb guard)."""
    from PIL import Image

    path = Path(path)
    _check_regular(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            w, h = img.size
            if w * h > max_pixels:
                raise MediaError(f"{path}: image is {w}x{h} = {w * h} pixels, more than the limit {max_pixels}")
            img.load()  # decode now: truncated files fail here, not later
    except MediaError:
        raise
    except FileNotFoundError:
        raise MediaError(f"{path}: file not found") from None
    except Image.DecompressionBombError as e:
        raise MediaError(f"{path}: {e}") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL's UnidentifiedImageError is an OSError
        raise MediaError(f"{path}: not a readable image ({e})") from None
    if w == 0 or h == 0:
        raise MediaError(f"{path}: image has zero size")
    return img


def to_rgb(img):
    """Any Pillow mode → RGB; transparent pixels become white (not black, as a bare convert does)."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # high bit depth greyscale: scale to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        hi = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0, 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def resize_image(img, size: int | None, policy: str = "resize"):
    """Apply the resize policy; ``size=None`` keeps the image as it is."""
    from PIL import Image

    if policy not in RESIZE_POLICIES:
        raise ValueError(f"unknown resize policy {policy!r}; known: {', '.join(RESIZE_POLICIES)}")
    if size is None or img.size == (size, size):
        return img
    if policy == "resize":
        return img.resize((size, size), Image.Resampling.BICUBIC)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(path: str | os.PathLike, size: int | None = None, policy: str = "resize",
               max_pixels: int = DEFAULT_MAX_PIXELS):
    """Read an image file as an RGB ``PIL.Image`` of ``size×size`` (or its own size when None)."""
    img = open_image(path, max_pixels)
    if img.mode in ("F", "I", "I;16", "I;16B", "I;16L"):
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).all():  # a float TIFF with NaN would silently turn black
            raise MediaError(f"{path}: image contains NaN or Inf pixels")
    return resize_image(to_rgb(img), size, policy)


def save_image(img, path: str | os.PathLike) -> Path:
    """Write a PIL image (or an HxWx3 uint8 array) atomically, in the format its suffix names
    (``.jpg``, ``.webp``, …); PNG for ``.png`` and for any suffix Pillow does not know."""
    from PIL import Image

    if isinstance(img, np.ndarray):
        img = Image.fromarray(img.astype(np.uint8))
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    if fmt == "JPEG" and img.mode not in ("RGB", "L", "CMYK"):
        img = to_rgb(img)  # JPEG has no alpha channel
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)
    return path


def check_waveform(wav: np.ndarray, where: str) -> np.ndarray:
    """Reject empty, NaN or Inf audio (``where`` names the file or item in the error)."""
    if wav.size == 0:
        raise MediaError(f"{where}: audio is empty")
    if not np.isfinite(wav).all():
        raise MediaError(f"{where}: audio contains NaN or Inf samples")
    return wav


# Source rates outside this range are refused from the header: below it no speech or music is left,
# above it is no real recorder (768 kHz is the highest rate audio interfaces offer).
MIN_SOURCE_RATE = 1_000
MAX_SOURCE_RATE = 768_000
# torchaudio's sinc resampler builds a kernel of new' × (orig' + 2·width) values, where orig'/new'
# are the rates divided by their gcd: cheap for 44.1k→16k (160 × 459), but 22,051 Hz → 16 kHz
# shares no factor and needs 16000 × 22085 (several GB). Past this many kernel values the ratio is
# replaced by the nearest fraction with a small denominator (see :func:`resample_ratio`).
MAX_KERNEL_VALUES = 4_000_000
MAX_RATE_ERROR = 1e-4  # relative change of the rate the bounded ratio may make (inaudible: < 0.2 cents)


def _kernel_values(orig: int, new: int) -> int:
    import math

    width = math.ceil(6 * orig / (0.99 * min(orig, new)))
    return new * (orig + 2 * width)


def resample_ratio(orig_sr: int, sample_rate: int, where: str = "audio") -> tuple[int, int]:
    """The (orig, new) pair passed to the resampler: the rates reduced by their gcd when that
    kernel is affordable, else the nearest fraction whose kernel fits ``MAX_KERNEL_VALUES``
    (relative rate error below ``MAX_RATE_ERROR``). Rates outside the allowed source range raise
    :class:`MediaError` naming ``where``."""
    import math
    from fractions import Fraction

    if not MIN_SOURCE_RATE <= orig_sr <= MAX_SOURCE_RATE:
        raise MediaError(f"{where}: sample rate {orig_sr} Hz is outside the supported range "
                         f"{MIN_SOURCE_RATE}–{MAX_SOURCE_RATE} Hz")
    g = math.gcd(orig_sr, sample_rate)
    orig, new = orig_sr // g, sample_rate // g
    if _kernel_values(orig, new) <= MAX_KERNEL_VALUES:
        return orig, new
    exact = Fraction(sample_rate, orig_sr)
    limit = 1000
    while limit >= 1:
        f = exact.limit_denominator(limit)
        if f.numerator > 0 and _kernel_values(f.denominator, f.numerator) <= MAX_KERNEL_VALUES:
            if abs(float(f / exact) - 1.0) <= MAX_RATE_ERROR:
                return f.denominator, f.numerator
            break
        limit //= 2
    raise MediaError(f"{where}: cannot resample {orig_sr} Hz to {sample_rate} Hz at bounded cost")


def resample(wav: np.ndarray, orig_sr: int, sample_rate: int | None, where: str = "audio") -> np.ndarray:
    """Resample a mono float32 waveform with torchaudio (no-op when the rates match).

    The cost is bounded before any work (:func:`resample_ratio`): a rate outside
    ``MIN_SOURCE_RATE``–``MAX_SOURCE_RATE`` is a :class:`MediaError`, and a ratio with no small
    common factor is resampled at the nearest affordable ratio."""
    if sample_rate is None or orig_sr == sample_rate:
        return np.ascontiguousarray(wav, dtype=np.float32)
    import torch
    import torchaudio.functional as AF

    orig, new = resample_ratio(int(orig_sr), int(sample_rate), where)
    out = AF.resample(torch.from_numpy(np.ascontiguousarray(wav, dtype=np.float32)), orig, new)
    return out.numpy().astype(np.float32, copy=False)


def audio_duration(path: str | os.PathLike) -> float:
    """Seconds of audio in a file, from its header (nothing is decoded)."""
    import soundfile as sf

    path = Path(path)
    _check_regular(path)
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise MediaError(f"{path}: not a readable audio file ({e})") from None
    if info.frames == 0 or info.samplerate <= 0:
        raise MediaError(f"{path}: audio is empty")
    return float(info.frames) / float(info.samplerate)


def load_audio(path: str | os.PathLike, sample_rate: int | None = None, max_seconds: float | None = None,
               start: float = 0.0, length: float | None = None) -> np.ndarray:
    """Read wav/flac/ogg/mp3 as a mono float32 waveform at ``sample_rate`` (file rate when None).

    ``start``/``length`` (seconds) read only that window of the file (``length`` None: to the end).
    Refuses audio longer than ``max_seconds`` — the part that would be read — before decoding it."""
    import soundfile as sf

    path = Path(path)
    _check_regular(path)
    if start < 0 or (length is not None and length <= 0):
        raise MediaError(f"{path}: window start {start} s / length {length} s must be >= 0 / > 0")
    windowed = start > 0 or length is not None
    try:
        info = sf.info(str(path))
        if info.channels <= 0:
            raise MediaError(f"{path}: audio has no channels")
        if info.frames == 0:
            raise MediaError(f"{path}: audio is empty")
        if not MIN_SOURCE_RATE <= info.samplerate <= MAX_SOURCE_RATE:  # before decoding or resampling
            raise MediaError(f"{path}: sample rate {info.samplerate} Hz is outside the supported range "
                             f"{MIN_SOURCE_RATE}–{MAX_SOURCE_RATE} Hz")
        first = int(round(start * info.samplerate))
        if info.frames > 0 and first >= info.frames:
            raise MediaError(f"{path}: window start {start:g} s is past the end ({info.duration:.2f} s)")
        frames = -1 if length is None else max(1, int(round(length * info.samplerate)))
        span = info.duration - start if length is None else min(length, info.duration - start)
        if max_seconds is not None and info.frames > 0 and span > max_seconds:
            hint = "; give a window (start, length)" if not windowed else ""
            raise MediaError(f"{path}: audio is {span:.2f} s, longer than the limit {max_seconds} s{hint}")
        data, sr = sf.read(str(path), start=first, frames=frames, dtype="float32", always_2d=True)
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise MediaError(f"{path}: not a readable audio file ({e})") from None
    if data.shape[1] == 0:
        raise MediaError(f"{path}: audio has no channels")
    if data.shape[0] == 0:
        raise MediaError(f"{path}: the window at {start:g} s holds no audio")
    if max_seconds is not None and data.shape[0] / sr > max_seconds:  # formats with unknown frame count
        raise MediaError(f"{path}: audio is {data.shape[0] / sr:.2f} s, longer than the limit {max_seconds} s")
    wav = check_waveform(data.mean(axis=1), str(path))
    return resample(wav, sr, sample_rate, str(path))


def save_audio(wav, sample_rate: int, path: str | os.PathLike) -> Path:
    """Write a mono waveform (numpy or torch, any shape squeezing to 1-D) as 16-bit PCM wav, atomically."""
    import soundfile as sf

    if hasattr(wav, "detach"):
        wav = wav.detach().float().cpu().numpy()
    wav = np.asarray(wav, dtype=np.float32).reshape(-1)
    wav = np.clip(np.nan_to_num(wav, nan=0.0, posinf=0.0, neginf=0.0), -1.0, 1.0)
    path = Path(path)
    with atomic_path(path) as tmp:
        sf.write(str(tmp), wav, int(sample_rate), format="WAV", subtype="PCM_16")
    return path


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, fmin: float = 0.0,
                   fmax: float | None = None) -> np.ndarray:
    """Triangular HTK-mel filters ``[n_mels, n_fft // 2 + 1]`` (torchaudio's, unnormalised), to
    multiply with a power spectrogram of ``n_fft``-point frames at ``sample_rate``."""
    import torchaudio.functional as AF

    fb = AF.melscale_fbanks(n_fft // 2 + 1, float(fmin), float(sample_rate / 2 if fmax is None else fmax),
                            int(n_mels), int(sample_rate), norm=None, mel_scale="htk")
    return fb.T.numpy().astype(np.float32)
