// The periodic task form of /django-admin/ (django-celery-beat): shows the chosen crontab in words under
// the crontab field. Replaces the package's inline script, which the Content-Security-Policy refuses.
(() => {
  const script = document.getElementById('periodic-task-overrides');
  const data = document.getElementById('readable-crontabs');
  const select = document.getElementById('id_crontab');
  if (!script || !data || !select) return;
  const readable = JSON.parse(data.textContent);
  const originalHelp = script.dataset.crontabHelp || '';
  for (const row of document.querySelectorAll('.field-crontab_translation')) row.style.display = 'none';
  const update = () => {
    const help = document.querySelector('.field-crontab .help');
    if (!help) return;
    help.replaceChildren(originalHelp, document.createElement('br'), `Translation: ${readable[select.value] ?? ''}`);
  };
  select.addEventListener('change', update);
})();
