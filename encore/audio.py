"""Audio previews: a sketch's MIDI rendered with a General MIDI SoundFont to .wav, .flac or .ogg.

The synthesizer is FluidSynth: the system library (Debian: ``apt-get install libfluidsynth3``,
which also brings the small TimGM6mb SoundFont) through its Python binding ``pyfluidsynth``.
Files are written by ``soundfile`` (libsndfile, bundled in its wheel); Ogg Vorbis is about a
sixteenth of the WAV's size, which is why exports use it.
The SoundFont is ``music.audio.soundfont`` when set, else the first of the usual system paths.
Without either, ``soundfont`` raises one line that says how to get them; nothing else in
Encore needs audio.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from encore.errors import EncoreError

SYSTEM_SOUNDFONTS = ("/usr/share/sounds/sf2/default-GM.sf2", "/usr/share/sounds/sf2/FluidR3_GM.sf2",
                     "/usr/share/sounds/sf2/TimGM6mb.sf2", "/usr/share/soundfonts/default.sf2")
HOW_TO_GET = ("install FluidSynth and a General MIDI SoundFont (Debian/Ubuntu: sudo apt-get install "
              "libfluidsynth3 fluid-soundfont-gm) or set music.audio.soundfont to any .sf2 file")


def soundfont(configured: str | None) -> Path:
    """The SoundFont to render with: the configured one (which must exist), else a system one."""
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise EncoreError(f"music.audio.soundfont = {configured} is not a file: fix the path, or {HOW_TO_GET}")
        return path
    found = next((Path(p) for p in SYSTEM_SOUNDFONTS if Path(p).is_file()), None)
    if found is None:
        raise EncoreError(f"no SoundFont for audio: {HOW_TO_GET}")
    return found


def _synth(sample_rate: int):
    try:
        import fluidsynth
    except ImportError as exc:  # pyfluidsynth raises ImportError when libfluidsynth is missing
        raise EncoreError(f"FluidSynth is not available ({exc}): {HOW_TO_GET}") from None
    return fluidsynth.Synth(gain=0.6, samplerate=float(sample_rate))


FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}


def render_audio(midi: bytes, font: Path, out: Path, sample_rate: int = 44100, tail_seconds: float = 1.0) -> float:
    """Render MIDI bytes to stereo audio at ``out`` (format by suffix); returns its length in seconds."""
    import soundfile
    import symusic
    if out.suffix.lower() not in FORMATS:
        raise EncoreError(f"{out}: audio is written as {', '.join(FORMATS)}; name the file with one of them")
    score = symusic.Score.from_midi(midi).to("second")
    events = []  # (second, order, channel, pitch, velocity): note-offs (0) sort before note-ons (1)
    programs = []
    for channel, track in enumerate(score.tracks[:15]):
        channel = channel if channel < 9 else channel + 1   # channel 9 is the drum kit in General MIDI
        programs.append((channel, 0 if track.is_drum else int(track.program)))
        for note in track.notes:
            events.append((float(note.time), 1, channel, int(note.pitch), int(note.velocity)))
            events.append((float(note.time + note.duration), 0, channel, int(note.pitch), 0))
    events.sort()
    synth = _synth(sample_rate)
    try:
        font_id = synth.sfload(str(font))
        if font_id < 0:
            raise EncoreError(f"{font} is not a SoundFont FluidSynth can load: {HOW_TO_GET}")
        for channel, program in programs:
            synth.program_select(channel, font_id, 0, program)
        chunks, now = [], 0
        for second, is_on, channel, pitch, velocity in events:
            frame = int(round(second * sample_rate))
            if frame > now:
                chunks.append(synth.get_samples(frame - now))
                now = frame
            if is_on:
                synth.noteon(channel, pitch, velocity)
            else:
                synth.noteoff(channel, pitch)
        chunks.append(synth.get_samples(int(tail_seconds * sample_rate)))
    finally:
        synth.delete()
    samples = np.concatenate(chunks).astype(np.int16).reshape(-1, 2)   # FluidSynth interleaves left, right
    out.parent.mkdir(parents=True, exist_ok=True)
    kind, subtype = FORMATS[out.suffix.lower()]
    soundfile.write(str(out), samples, sample_rate, format=kind, subtype=subtype)
    return len(samples) / sample_rate
