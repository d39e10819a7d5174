// Entry point of every panel page (<script type="module">, no inline code: the CSP allows
// only same-origin scripts). Picks the page controller from <body data-page>.

import { guard, localizeTimes, showError } from './dom.js';
import { setupDialogs } from './actions.js';
import { initJobs } from './jobs.js';
import { initJob } from './job.js';

const PAGES = { jobs: initJobs, job: initJob };

window.addEventListener('unhandledrejection', (event) => {
  const reason = event.reason && event.reason.message ? event.reason.message : String(event.reason);
  showError(`Something went wrong in the page: ${reason}. Reload to continue.`);
});

guard(() => {
  localizeTimes(document);
  setupDialogs();
  const init = PAGES[document.body.dataset.page];
  if (init) init();
});
