import { render } from 'preact';
import { App } from './app';
import { pickBackend, type Host } from './backend';
import './styles.css';

render(<App backend={pickBackend(window as unknown as Host)} />, document.getElementById('app')!);
