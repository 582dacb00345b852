
(function(){
'use strict';
var tbody=document.querySelector('#studies tbody');
var rows=Array.prototype.slice.call(tbody.querySelectorAll('tr.study'));
var q=function(id){return document.getElementById(id);};
var fFind=q('f-finding'),fKind=q('f-kind'),fSplit=q('f-split'),fText=q('f-text'),fSys=q('f-system'),
    sKey=q('s-key'),sDir=q('s-dir'),count=q('count'),pageInfo=q('page-info');
var page=0,pageSize=parseInt(q('page-size').value,10),matching=rows;
var texts=rows.map(function(r){return r.textContent.toLowerCase();});
rows.forEach(function(r,i){r._i=i;});
function sys(){return fSys?fSys.value:'a';}
function matches(r){
  var s=sys(),find=fFind.value,kind=fKind.value,split=fSplit.value,t=fText.value.trim().toLowerCase();
  if(split&&r.dataset.split!==split)return false;
  var out=(r.dataset['out'+s.toUpperCase()]||'').split(' ').filter(Boolean);
  var kinds=(r.dataset['kinds'+s.toUpperCase()]||'').split(' ').filter(Boolean);
  if(find){
    var hit=out.filter(function(x){return x.split(':')[0]===find;});
    if(!hit.length)return false;
    if(kind==='fp'||kind==='fn'){if(!hit.some(function(x){return x.split(':')[1]===kind;}))return false;}
  }
  if(kind&&!(find&&(kind==='fp'||kind==='fn'))&&kinds.indexOf(kind)<0)return false;
  if(t&&texts[r._i].indexOf(t)<0)return false;
  return true;
}
function val(r,k){var v=r.getAttribute('data-m-'+k);return v===null||v===''?NaN:parseFloat(v);}
function apply(){
  var k=sKey.value,asc=sDir.value==='asc';
  matching=rows.filter(matches);
  matching.sort(function(a,b){
    var x=val(a,k),y=val(b,k);
    if(isNaN(x)&&isNaN(y))return a._i-b._i;if(isNaN(x))return 1;if(isNaN(y))return -1;
    return x===y?a._i-b._i:(asc?x-y:y-x);});
  var frag=document.createDocumentFragment();
  matching.forEach(function(r){frag.appendChild(r);});
  var inm=new Set(matching);rows.forEach(function(r){if(!inm.has(r))frag.appendChild(r);});
  tbody.appendChild(frag);
  page=Math.min(page,Math.max(0,Math.ceil(matching.length/pageSize)-1));
  show();
}
function show(){
  var a=page*pageSize,b=a+pageSize,shown=0;
  var pos=new Map();matching.forEach(function(r,i){pos.set(r,i);});
  rows.forEach(function(r){var i=pos.has(r)?pos.get(r):-1;var vis=i>=a&&i<b;r.hidden=!vis;if(vis)shown++;});
  count.textContent=matching.length+' of '+rows.length+' studies match';
  var pages=Math.max(1,Math.ceil(matching.length/pageSize));
  pageInfo.textContent='page '+(page+1)+' / '+pages+' ('+shown+' shown)';
}
function setSystem(){
  var b=sys()==='b';rows.forEach(function(r){r.classList.toggle('showB',b);});
}
sKey.addEventListener('change',function(){var o=sKey.options[sKey.selectedIndex];
  if(o.dataset.dir)sDir.value=o.dataset.dir;});
[fFind,fKind,fSplit,sKey,sDir].forEach(function(el){el.addEventListener('change',function(){page=0;apply();});});
var timer;fText.addEventListener('input',function(){clearTimeout(timer);timer=setTimeout(function(){page=0;apply();},150);});
if(fSys)fSys.addEventListener('change',function(){setSystem();page=0;apply();});
q('page-size').addEventListener('change',function(e){pageSize=parseInt(e.target.value,10);page=0;show();});
q('prev').addEventListener('click',function(){if(page>0){page--;show();}});
q('next').addEventListener('click',function(){if((page+1)*pageSize<matching.length){page++;show();}});
tbody.addEventListener('click',function(e){
  var t=e.target;
  if(t.classList&&t.classList.contains('tog')){
    var tr=t.closest('tr');tr.classList.toggle('showB');
    t.textContent=tr.classList.contains('showB')?t.dataset.b:t.dataset.a;return;}
  if(t.tagName==='IMG'&&t.classList.contains('thumb')){
    var ov=q('overlay');ov.querySelector('img').src=t.src;ov.querySelector('img').alt=t.alt;ov.style.display='flex';}
});
q('overlay').addEventListener('click',function(){this.style.display='none';});
['pred','ref'].forEach(function(k){var c=q('bx-'+k);if(c)c.addEventListener('change',function(){
  document.body.classList.toggle('hide-'+k,!c.checked);});});
document.addEventListener('keydown',function(e){if(e.key==='Escape')q('overlay').style.display='none';});
apply();
window.__report={apply:apply,visible:function(){return rows.filter(function(r){return !r.hidden;}).length;}};
})();
