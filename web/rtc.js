// The browser's parts of a call that hold no call state: the microphone (with or without the
// browser's own processing, ?raw=1) and waiting for ICE gathering.

import { RAW } from "./params.js";

export async function openMicrophone() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error(
      "this browser gives no microphone access here; open the page over https or on localhost.",
    );
  }
  const processing = !RAW;
  return navigator.mediaDevices.getUserMedia({
    audio: {
      echoCancellation: processing,
      noiseSuppression: processing,
      autoGainControl: processing,
      channelCount: 1,
    },
    video: false,
  });
}

export function iceGatheringDone(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", onChange);
      resolve();
    };
    const onChange = () => {
      if (pc.iceGatheringState === "complete") finish();
    };
    const timer = setTimeout(finish, ms);
    pc.addEventListener("icegatheringstatechange", onChange);
  });
}
