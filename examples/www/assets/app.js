document.title += ' (app.js loaded)';
