// Entry point of every panel page (<script type="module">, no inline code: the CSP allows
// only same-origin scripts). Picks the page controller from <body data-page>.

import { setupLogout } from './api.js';
import { guard, pageState, showError } from './dom.js';
import { initTime } from './time.js';
import { startLive } from './live.js';
import { setupDialogs } from './actions.js';
import { startBreakGlass } from './breakglass.js';
import { initJobs } from './jobs.js';
import { initJob } from './job.js';
import { initApprovals } from './approvals.js';
import { initUsers } from './users.js';

const PAGES = { jobs: initJobs, job: initJob, approvals: initApprovals, users: initUsers };

window.addEventListener('unhandledrejection', (event) => {
  const reason = event.reason && event.reason.message ? event.reason.message : String(event.reason);
  showError(`Something went wrong in the page: ${reason}. Reload to continue.`);
});

guard(() => {
  initTime(); // every time on the page in the chosen zone, the header switch, zone inputs
  setupLogout();
  // The password page is a plain form, and its user may not use the API until the password is changed.
  if (document.body.dataset.page === 'password') return;
  setupDialogs();
  startBreakGlass();
  const init = PAGES[document.body.dataset.page];
  if (init) {
    init();
  } else {
    // Other pages: only the header badge and the banners follow the stream; nothing to re-list.
    startLive({ job: () => {}, relist: () => {}, poll: async () => false }, pageState().pollInterval);
  }
});
