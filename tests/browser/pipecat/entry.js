// What the browser test needs from Pipecat's JavaScript client, bundled by esbuild into one file
// (a global `Pipecat`) that the test serves itself: nothing comes from a CDN.
export { PipecatClient, RTVIEvent, RTVI_PROTOCOL_VERSION } from "@pipecat-ai/client-js";
// WavMediaManager (getUserMedia) instead of the transport's default DailyMediaManager, which
// downloads Daily's call-object bundle from a CDN.
export { SmallWebRTCTransport, WavMediaManager } from "@pipecat-ai/small-webrtc-transport";
