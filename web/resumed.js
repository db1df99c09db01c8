// What a reconnect's answer says of the conversation (the offer answer's "resumed"): the page
// keeps it in vg.resumed and, when the server started afresh, tells the user so.

import { showNotice, vg } from "./page.js";
import { transcriptSeparator } from "./transcript.js";

// What a reconnect's answer says of the conversation: carried on, or started afresh because
// the server no longer had it (a restarted server); the user must know the history is gone.
export function showResumed(answer) {
  if (answer.resumed === false) {
    vg.resumed = false;
    transcriptSeparator("New conversation");
    showNotice(
      "The server lost the earlier conversation (it restarted): this is a new conversation, " +
        "and the assistant does not remember what was said before.",
    );
  } else if (answer.resumed === true) {
    vg.resumed = true;
  }
}
