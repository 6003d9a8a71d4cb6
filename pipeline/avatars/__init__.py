"""Real-time avatars: prepare a face video once (``avatar``), store it (``store``), then speak any voice through it,
all at once (``Avatar.speak``) or while the voice arrives (``live.LiveSpeech``).

The avatar floor sits on top of the lip-sync floor: speaking is one :class:`~..lipsync.LipSyncRun` whose MuseTalk
backend reads the stored latents and blend masks instead of computing them.
"""
from .avatar import DEFAULT_LOOP, Avatar, AvatarRun, IdleLoop, check_loop, describe, prepare_avatar
from .live import LiveSpeech
from .store import (AvatarError, avatars_root, file_identity, frames_identity, is_current, list_avatars, read_manifest,
                    remove_avatar)

__all__ = ["Avatar", "AvatarRun", "AvatarError", "IdleLoop", "DEFAULT_LOOP", "prepare_avatar", "check_loop",
           "is_current", "file_identity", "frames_identity", "describe", "avatars_root", "list_avatars",
           "read_manifest", "remove_avatar", "LiveSpeech"]
