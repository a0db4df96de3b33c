// The dashboard's shell: sign-in with a token, navigation between views by the URL's hash
// (#/pool, #/volumes, #/volume/NAME, #/io, #/jobs, #/cluster), and who is signed in.
import { render } from 'preact';
import { useEffect, useState } from 'preact/hooks';
import './style.css';
import { currentToken, get, onSignedOut, setToken, type Whoami } from './api';
import { ErrorLine } from './components';
import { PoolView } from './views/pool';
import { VolumesView } from './views/volumes';
import { LineageView } from './views/lineage';
import { IoView } from './views/io';
import { JobsView } from './views/jobs';
import { ClusterView, useClusterAvailable } from './views/cluster';
import { useSamplers } from './samplers';

function useHash(): string {
  const [hash, setHash] = useState(location.hash);
  useEffect(() => {
    const on = () => setHash(location.hash);
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return hash;
}

function Login({ onSignedIn }: { onSignedIn: (w: Whoami) => void }) {
  const [value, setValue] = useState('');
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setToken(value.trim());
    try {
      onSignedIn(await get<Whoami>('/v1/whoami'));
    } catch (err) {
      setToken(null);
      setError(err);
    } finally { setBusy(false); }
  };
  return (
    <main class="login">
      <h1>Cairn</h1>
      <form onSubmit={submit}>
        <label for="token">API token</label>
        <input id="token" name="token" type="password" autoComplete="off" required value={value}
          onInput={(e) => setValue((e.target as HTMLInputElement).value)} />
        <p class="hint">An admin token (the daemon writes one beside the pool, mode 0600) or a tenant's token from <code>cairn token create</code>. It stays in this tab only.</p>
        <button type="submit" disabled={busy || value.trim() === ''}>Sign in</button>
        <ErrorLine error={error} />
      </form>
    </main>
  );
}

const views = [
  { hash: '#/pool', label: 'Pool' },
  { hash: '#/volumes', label: 'Volumes' },
  { hash: '#/io', label: 'Live I/O' },
  { hash: '#/jobs', label: 'Jobs' },
];

function App() {
  const [who, setWho] = useState<Whoami | null>(null);
  const [error, setError] = useState<unknown>(null);
  const hash = useHash();
  useEffect(() => onSignedOut(() => setWho(null)), []);
  useEffect(() => {
    if (currentToken() === null || who !== null) return;
    get<Whoami>('/v1/whoami').then(setWho, setError);
  }, [who]);
  // Storage nodes are the operator's business: only an admin's page asks (a tenant's token is never sent there).
  const cluster = useClusterAvailable(who?.role === 'admin');
  useSamplers(who !== null);
  if (currentToken() === null || (who === null && error !== null)) return <Login onSignedIn={(w) => { setError(null); setWho(w); }} />;
  if (who === null) return <main><p>Loading…</p></main>;
  const route = hash === '' || hash === '#/' ? '#/pool' : hash;
  const nav = cluster ? [...views, { hash: '#/cluster', label: 'Cluster' }] : views;
  const active = (h: string) => route === h || (h === '#/volumes' && route.startsWith('#/volume/'));
  let body;
  if (route.startsWith('#/volume/')) body = <LineageView name={decodeURIComponent(route.slice('#/volume/'.length))} who={who} />;
  else if (route === '#/volumes') body = <VolumesView who={who} />;
  else if (route === '#/io') body = <IoView />;
  else if (route === '#/jobs') body = <JobsView />;
  else if (route === '#/cluster' && cluster) body = <ClusterView />;
  else body = <PoolView who={who} />;
  return (
    <>
      <header class="top">
        <a class="brand" href="#/pool">Cairn</a>
        <nav aria-label="Views">
          {nav.map((v) => <a href={v.hash} aria-current={active(v.hash) ? 'page' : undefined}>{v.label}</a>)}
        </nav>
        <div class="who">
          <span title={`token ${who.tokenName}`}>{who.role}{who.tenant !== null ? ` · ${who.tenant}` : ''}</span>
          <button type="button" class="link" onClick={() => { setToken(null); setWho(null); }}>Sign out</button>
        </div>
      </header>
      <main id="main">{body}</main>
    </>
  );
}

render(<App />, document.getElementById('app')!);
