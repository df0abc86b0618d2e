"""Offline text-to-speech with eSpeak NG, through the library the ``espeakng-loader`` wheel ships.

The library is driven in-process with ctypes (no ``espeak-ng`` binary, no apt package): synchronous
output mode, a synth callback that collects 16-bit samples, voice by name (``en-us``, ``en+f4``…),
rate in words per minute, pitch (0–100). eSpeak renders at 22,050 Hz; :func:`speak` resamples to the requested
rate with the package's resampler (:func:`anygpt.modality.media.resample`).

eSpeak keeps state between utterances inside the library (the same text comes out a few samples
longer or shorter depending on what was spoken before), so for reproducible corpora each
utterance is synthesised in a forked child that starts from a fresh library (``isolated=True``,
about 5 ms per call on POSIX). Without fork (Windows) the in-process engine is used.

Example::

    wav = speak("a red circle", voice="en-us+f4", rate=160, sample_rate=16000)  # float32 mono
"""

from __future__ import annotations

import ctypes
import os
import struct
import threading

import numpy as np

from anygpt.modality.media import resample

# the f2, f3 and f5 variants are left out: their samples vary from one call to the next (a fresh
# library each time, same arguments), which would break the corpus's byte-identical rebuilds
VOICES: tuple[str, ...] = ("en-us", "en", "en+f1", "en-gb-scotland", "en+m3", "en+f4", "en+m1", "en-029",
                           "en-gb-x-rp", "en-us+f4")
DEFAULT_PITCH = 50  # eSpeak's own default on its 0–100 scale

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_ESPEAK_PITCH = 3
_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class TTSError(RuntimeError):
    """eSpeak NG is unavailable or refused a voice/text."""


class _Engine:
    """The process-wide eSpeak NG instance."""

    def __init__(self) -> None:
        self.lib = _library()
        self.sample_rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, _DATA_PATH[0].encode(), 0)
        if self.sample_rate <= 0:
            raise TTSError(f"espeak_Initialize failed ({self.sample_rate})")
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # keep a reference: the library holds the pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lock = threading.Lock()

    def _collect(self, wav, n, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int = DEFAULT_PITCH) -> np.ndarray:
        with self.lock:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise TTSError(f"eSpeak NG has no voice {voice!r}; try one of {', '.join(VOICES)}")
            self.lib.espeak_SetParameter(_ESPEAK_RATE, int(rate), 0)
            self.lib.espeak_SetParameter(_ESPEAK_PITCH, int(pitch), 0)
            data = text.encode("utf-8")
            self._chunks = []
            err = self.lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
            self.lib.espeak_Synchronize()
            if err != 0:
                raise TTSError(f"espeak_Synth failed ({err}) for {text[:40]!r}")
            pcm = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
            self._chunks = []
        return pcm


_LIB: ctypes.CDLL | None = None
_DATA_PATH: list[str] = []


def _library() -> ctypes.CDLL:
    """dlopen libespeak-ng once, in the parent: forked children only call into it (no imports or
    dlopen after fork), and the library's state stays pristine until someone initialises it."""
    global _LIB
    if _LIB is None:
        try:
            import espeakng_loader
        except ImportError as e:  # pragma: no cover
            raise TTSError("speech synthesis needs the espeakng-loader wheel (pip install espeakng-loader)") from e
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        _DATA_PATH[:] = [espeakng_loader.get_data_path()]
        _LIB = lib
    return _LIB


_ENGINE: _Engine | None = None


def _engine() -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine()
    return _ENGINE


def _synth_in_child(text: str, voice: str, rate: int, pitch: int) -> tuple[np.ndarray, int]:
    """Fork; the child initialises eSpeak from scratch, speaks, and pipes the PCM back."""
    if _ENGINE is not None:
        raise TTSError("eSpeak NG was already used in this process (isolated=False); isolated calls would inherit its state")
    _library()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        code = 0
        try:
            os.close(r)
            eng = _Engine()
            pcm = eng.synth(text, voice, rate, pitch)
            payload = struct.pack("<ii", 0, eng.sample_rate) + pcm.astype("<i2").tobytes()
        except BaseException as e:  # report any failure to the parent
            payload = struct.pack("<ii", 1, 0) + str(e).encode("utf-8", "replace")
        try:
            with os.fdopen(w, "wb") as f:
                f.write(payload)
        except BaseException:
            code = 1
        os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    if len(data) < 8:
        raise TTSError(f"eSpeak NG child process died while speaking {text[:40]!r}")
    failed, sr = struct.unpack("<ii", data[:8])
    if failed:
        raise TTSError(data[8:].decode("utf-8", "replace"))
    return np.frombuffer(data[8:], dtype="<i2"), sr


def speak(text: str, voice: str = "en-us", rate: int = 160, sample_rate: int = 16000,
          isolated: bool = True, pitch: int = DEFAULT_PITCH) -> np.ndarray:
    """Speak ``text``; float32 mono in [-1, 1] at ``sample_rate``. Raises :class:`TTSError`.
    ``rate`` in words per minute, ``pitch`` on eSpeak's 0–100 scale (50: the voice's own).

    ``isolated`` (default) makes the result depend only on the arguments (see the module note)."""
    if not text.strip():
        raise TTSError("nothing to speak: empty text")
    if isolated and hasattr(os, "fork"):
        pcm, sr = _synth_in_child(text, voice, rate, pitch)
    else:
        eng = _engine()
        pcm, sr = eng.synth(text, voice, rate, pitch), eng.sample_rate
    wav = pcm.astype(np.float32) / 32768.0
    return np.clip(resample(wav, sr, sample_rate, "espeak"), -1.0, 1.0)
