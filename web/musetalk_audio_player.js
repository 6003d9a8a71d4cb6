// Load Audio (MuseTalk) declares `audio_upload` like core Load Audio. The frontend (1.27) adds the audio player that
// its upload button drives (the `audioUI` widget) only to the core audio nodes, so on our node the button would find
// no player and the node would load with an error. Add the player here, before the upload button, as the frontend
// does for core Load Audio (its widgets then read: audio, start_time, duration, player, upload).
import { app } from "../../scripts/app.js";

const NODE = "MuseTalkLoadAudio";

app.registerExtension({
  name: "MuseTalkEnhanced.AudioPlayer",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const required = nodeData?.input?.required;
    if (nodeData?.name !== NODE || !required || required.audioUI) return;
    const upload = required.upload;
    delete required.upload;
    required.audioUI = ["AUDIO_UI", {}];
    if (upload) required.upload = upload;
  },
});
