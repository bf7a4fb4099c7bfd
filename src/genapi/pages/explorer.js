// The genapi API explorer (GET /explorer): no build step, no dependencies but phoenix.js beside it.
"use strict";
window.__explorerReady = true;
